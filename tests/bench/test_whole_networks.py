import json

import pytest
from bench.common import share_with_interval
from bench.whole_networks import accuracy_figures, glance, inside_share, target_inside, target_mean


@pytest.mark.parametrize(("low", "high", "expected"), [
    (-0.004, 0.006, "met"),  # the whole CI within +-1 point
    (-0.010, 0.010, "met"),  # its edges on the bounds
    (0.0139, 0.0204, "not met"),  # above by more than a point (mnist-mlp-full: the generated models are better)
    (-0.030, -0.012, "not met"),
    (0.004, 0.016, "undecided"),  # holds both a small and a too-large difference
])
def test_the_mean_target_is_met_only_when_the_whole_ci_lies_within_one_point(low: float, high: float,
                                                                            expected: str) -> None:
    assert target_mean({"ci_low": low, "ci_high": high}) == expected


def test_the_inside_share_comes_with_its_wilson_interval() -> None:
    assert share_with_interval(99, 100) == "99% [94.6, 99.8]"
    assert share_with_interval(100, 100) == "100% [96.3, 100.0]"  # all inside: the interval still leaves room


def test_the_inside_target_holds_only_when_the_intervals_lower_end_reaches_95_percent() -> None:
    assert target_inside(inside_share([0.5] * 99 + [0.9], 0.4, 0.6, "val")) == "does not hold"  # 99% [94.6, 99.8]
    share = inside_share([0.5] * 297 + [0.9] * 3, 0.4, 0.6, "val")
    assert (share["count"], share["n"], share["split"]) == (297, 300, "val") and share["low"] > 0.97
    assert target_inside(share) == "holds"


def test_the_targets_are_judged_on_validation_and_test_is_reported(tiny_run) -> None:
    figures = accuracy_figures("mnist1d-convnet", tiny_run.parent, [])
    assert figures["mean_target"]["split"] == figures["inside_target"]["split"] == "val"
    assert figures["mean"]["val"]["metric"] == "mean_val_accuracy"
    assert figures["mean"]["test"]["metric"] == "mean_test_accuracy"
    assert figures["inside"]["val"]["n"] == figures["inside"]["test"]["n"] == figures["n"] == 6
    results = json.loads((tiny_run / "evaluate/results.json").read_text())
    generated_val = [m["val_accuracy"] for m in results["models"] if m["group"] == "generated"]
    val_mean = figures["mean"]["val"]["difference"]  # from the val predictions, as results.json's val accuracies
    original_val = [m["val_accuracy"] for m in results["models"] if m["group"] == "original"]
    assert val_mean == pytest.approx(sum(generated_val) / 6 - sum(original_val) / len(original_val), abs=1e-6)


def test_the_readme_leaves_a_test_judged_row_to_benchmarks_once_validation_judged_it() -> None:
    def entry(split: str) -> dict:
        mean = {"difference": 0.001, "ci_low": -0.001, "ci_high": 0.003, "verdict": "no detectable difference"}
        return {"D": 10, "mean": {"test": mean}, "inside": {split: inside_share([0.5] * 100, 0.4, 0.6, split)},
                "inside_target": {"split": split, "verdict": "holds"}}
    results = {"order": ["a", "a train.seed=1", "b"], "tasks": {"a": entry("test"), "a train.seed=1": entry("val"),
                                                                "b": entry("test")}}
    assert [row[1] for row in glance(results)] == ["a train.seed=1 (D = 10)", "b (D = 10)"]
