"""bench.claims: every record is decided by pdiff.stats' one rule and carries numbers; the section renders them."""

import pytest

from bench import claims, common
from pdiff.verdicts import ACCURACY_MARGIN, DOMINANCE_VERDICTS


def comparison(metric: str, low: float, high: float, scope: str = "method") -> dict:
    return {"metric": metric, "difference": (low + high) / 2, "ci_low": low, "ci_high": high, "scope": scope}


def dominance(place: str, group: str = "finetune") -> dict:
    return {"group": group, "versus": "generated", "metric": "dominance", "verdict": place, "scope": "generator",
            "margin": ACCURACY_MARGIN, "accuracy": comparison("mean_test_accuracy", 0.001, 0.004),
            "similarity": comparison("median_max_iou", 0.01, 0.02, "generator")}


def test_an_effect_claim_keeps_its_numbers_and_where_its_size_came_from() -> None:
    record = claims.effect("paper", "p-diff's mean beats the originals' mean",
                           comparison("mean_test_accuracy", 0.0001, 0.002), 0.0052, 3, "ResNet-18 on CIFAR-100")
    assert record == {"claim": "p-diff's mean beats the originals' mean", "source": "paper", "kind": "effect",
                      "metric": "mean_test_accuracy", "difference": 0.00105, "ci_low": 0.0001, "ci_high": 0.002,
                      "scope": "method", "claimed": 0.0052, "verdict": "refuted", "generators": 3,
                      "claimed_from": "ResNet-18 on CIFAR-100"}
    matched = claims.equivalence("paper", "matches", comparison("mean_test_accuracy", -0.001, 0.002), None)
    assert matched["verdict"] == "reproduced" and matched["margin"] == ACCURACY_MARGIN and "claimed" not in matched


@pytest.mark.parametrize("place, expected", [
    (DOMINANCE_VERDICTS[0], "reproduced"),
    (DOMINANCE_VERDICTS[1], "refuted"),
    (DOMINANCE_VERDICTS[2], "refuted"),  # a resolved trade-off answers "dominates" no
    (DOMINANCE_VERDICTS[3], "refuted"),
    (DOMINANCE_VERDICTS[4], "not resolvable"),
])
def test_a_place_on_the_plane_is_reproduced_only_where_generated_stands_there(place, expected) -> None:
    record = claims.placed("paper", "generated dominates finetune", dominance(place), DOMINANCE_VERDICTS[0], 3)
    assert record["verdict"] == expected and record["placed"] == place
    assert record["accuracy"]["ci_low"] == 0.001 and record["similarity"]["ci_high"] == 0.02


def test_a_place_decided_by_an_earlier_rule_is_refused() -> None:
    earlier = {**dominance("undecided")}
    del earlier["margin"]
    with pytest.raises(SystemExit, match="evaluate --force"):
        claims.placed("paper", "generated dominates finetune", earlier, DOMINANCE_VERDICTS[0], 3)


def figures(ratio: float) -> dict:
    return {"models": 50, "memorization_ratio_median": ratio, "coverage": 0.1, "coverage_ci_low": 0.0,
            "coverage_ci_high": 0.3}


def heldout_test(ratio_cis: dict[str, tuple[float, float]], accuracy: tuple[float, float] = (-0.001, 0.002)
                 ) -> dict:
    """results.json["memorization"] with each baseline's CIs of generated minus it."""
    return {"generated": figures(1.0), "reference": figures(1.0), "baselines": {name: {
        **figures(0.8), "comparisons": {"mean_test_accuracy": comparison("mean_test_accuracy", *accuracy, "generator"),
                                        "median_memorization_ratio": comparison("median_memorization_ratio", low, high,
                                                                                "generator")}}
        for name, (low, high) in ratio_cis.items()}}


@pytest.mark.parametrize("ratio_cis, expected", [
    ({"mean_of_k": (0.1, 0.3), "gaussian": (0.2, 0.4), "interpolation": (0.05, 0.1)}, "refuted"),  # beats all
    ({"mean_of_k": (0.1, 0.3), "gaussian": (0.2, 0.4), "interpolation": (-0.1, 0.1)}, "not resolvable"),
    ({"mean_of_k": (0.1, 0.3), "gaussian": (0.2, 0.4), "interpolation": (-0.3, -0.1)}, "reproduced"),
    ({"mean_of_k": (0.0, 0.3), "gaussian": (0.2, 0.4), "interpolation": (0.05, 0.1)}, "not resolvable"),  # 0 held
])
def test_the_memorization_claim_needs_generated_to_beat_every_baseline(ratio_cis, expected) -> None:
    record = claims.memorization(heldout_test(ratio_cis), "last", 40, 1)
    assert record["verdict"] == expected and record["kind"] == "memorization"
    assert set(record["baselines"]) == {"mean_of_k", "gaussian", "interpolation"}
    assert record["baselines"]["gaussian"]["closeness"]["ci_low"] == 0.2


def test_at_equal_accuracy_means_non_inferior_within_the_margin() -> None:
    beaten_everywhere = {"mean_of_k": (0.1, 0.3), "gaussian": (0.2, 0.4), "interpolation": (0.05, 0.1)}
    less_accurate = claims.memorization(heldout_test(beaten_everywhere, (-0.006, -0.003)), "run", 40, 1)
    assert less_accurate["verdict"] == "not resolvable"  # nearer the unseen checkpoints, but less accurate


def test_the_section_renders_every_kind_from_the_records() -> None:
    records = [claims.effect("paper", "a gain", comparison("mean_test_accuracy", 0.001, 0.004), 0.005, 3),
               claims.equivalence("paper", "a match", comparison("mean_test_accuracy", -0.001, 0.002), None),
               claims.placed("paper", "generated dominates finetune", dominance(DOMINANCE_VERDICTS[2]),
                             DOMINANCE_VERDICTS[0], 3),
               claims.memorization(heldout_test({"mean_of_k": (0.1, 0.3), "gaussian": (0.2, 0.4),
                                                 "interpolation": (0.05, 0.1)}), "last", 40, 1)]
    entry = {"provenance": common.provenance("python -m bench.claims --task t"), "resolution": 0.0006,
             "table_one": [["original", "73.72", "73.46", "73.38", "73.40"]], "claims": records}
    section = claims.render({"tasks": {"t": entry}})
    assert "| paper | a gain | effect | +0.50 pts | +0.25 [+0.10, +0.40] pts | **reproduced** | 3 |" in section
    assert "| paper | a match | equivalence | within ±0.25 pts | +0.05 [-0.10, +0.20] pts | **reproduced** | - |" \
        in section
    assert "| generated dominates finetune | trade-off: generated more accurate, less novel than finetune (accuracy " \
           "+0.25 [+0.10, +0.40] pts, max IoU +0.015 [+0.010, +0.020] IoU) | **refuted** | 3 |" in section
    assert "| last | interpolation | 0.80 | 0.10 | +0.05 [-0.10, +0.20] pts | +0.075 [+0.050, +0.100] | " \
           "generated beats it |" in section


def test_the_readme_states_the_committed_verdicts() -> None:
    readme = " ".join((common.ROOT / "README.md").read_text().split())  # the sentence as wrapped there
    for task, entry in common.load_results("claims")["tasks"].items():
        assert claims.headline(task, entry) in readme


def test_the_glance_row_counts_one_generators_claims_apart() -> None:
    """A verdict for one trained generator speaks for that generator: the README's tally keeps it apart."""
    records = [claims.effect("paper", "a gain", comparison("mean_test_accuracy", 0.001, 0.004), 0.005, 3),
               claims.effect("paper", "an ablation", comparison("mean_test_accuracy", -0.002, 0.001), 0.01, 1),
               claims.equivalence("paper", "a match", comparison("mean_test_accuracy", -0.001, 0.002), None)]
    (row,) = claims.glance({"tasks": {"t": {"claims": records}}})
    assert row[2] == "2 reproduced (of 2); one trained generator each: 1 refuted (of 1)"
