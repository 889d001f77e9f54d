import json

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from pdiff.stats import (
    VERDICTS,
    Comparison,
    compare_accuracy,
    compare_values,
    dominance,
    generalization,
    nearest_distances,
    resolution,
    verdict,
)

METRICS = ["mean_test_accuracy", "median_test_accuracy", "best_val_chosen_test_accuracy"]


def models(m: int, n: int, seed: int, hard: int = 200) -> torch.Tensor:
    """correct [m, n]: right on the easy examples, a coin flip on the first `hard` ones."""
    generator = torch.Generator().manual_seed(seed)
    correct = torch.ones(m, n, dtype=torch.bool)
    correct[:, :hard] = torch.rand(m, hard, generator=generator) < 0.5
    return correct


def test_verdict() -> None:
    assert verdict(0.001, 0.01) == "higher" and verdict(-0.01, -0.001) == "lower"
    assert verdict(-0.01, 0.01) == verdict(0.0, 0.0) == verdict(0.0, 0.01) == VERDICTS[2]


def test_identical_groups_no_difference() -> None:
    correct, val = models(40, 2000, 0), torch.rand(40)
    results = compare_accuracy(correct, val, correct, val, "same")
    assert [r.metric for r in results] == METRICS
    for r in results:
        assert r.difference == 0 and r.ci_low <= 0 <= r.ci_high and r.ci_low < r.ci_high
        assert r.verdict == "no detectable difference" and r.p_value == 1.0
        assert r.group == "same" and r.versus == "original"


def test_fifty_more_examples_is_higher() -> None:
    n = 2000
    versus = models(40, n, 1)
    versus[:, -50:] = False
    group = versus.clone()
    group[:, -50:] = True  # every model right on 50 more examples
    val = torch.rand(40, generator=torch.Generator().manual_seed(2))
    results = compare_accuracy(group, val, versus, val, "better")
    for r in results:
        assert r.difference == 50 / n
        assert r.verdict == "higher" and 0 < r.ci_low < 50 / n < r.ci_high
        assert r.p_value < 1e-3
    assert results[2].p_value == pytest.approx(2 * 0.5 ** 50)  # McNemar: 50 discordant pairs, all one way
    lower = compare_accuracy(versus, val, group, val, "worse")
    assert [r.verdict for r in lower] == ["lower"] * 3 and lower[0].difference == -50 / n


def test_single_model_group_and_best_by_val() -> None:
    versus, versus_val = models(30, 1000, 3), torch.linspace(0.5, 0.9, 30)
    one = versus[[7]]
    results = compare_accuracy(one, torch.tensor([0.8]), versus, versus_val, "ensemble")
    counts = versus.sum(1)
    assert results[2].difference == pytest.approx((counts[7] - counts[29]).item() / 1000)  # best val: last model
    tied = compare_accuracy(versus, torch.zeros(30), versus, versus_val, "ties")  # all tied: first index
    assert tied[2].difference == pytest.approx((counts[0] - counts[29]).item() / 1000)
    assert all(r.ci_low <= r.difference <= r.ci_high for r in results)


def test_deterministic_for_a_seed() -> None:
    correct, versus, val = models(20, 1000, 4), models(20, 1000, 5), torch.rand(20)
    first = [r.as_dict() for r in compare_accuracy(correct, val, versus, val, "g", seed=3)]
    again = [r.as_dict() for r in compare_accuracy(correct, val, versus, val, "g", seed=3)]
    other = [r.as_dict() for r in compare_accuracy(correct, val, versus, val, "g", seed=4)]
    assert first == again
    assert [r["difference"] for r in first] == [r["difference"] for r in other]
    assert [(r["ci_low"], r["ci_high"]) for r in first] != [(r["ci_low"], r["ci_high"]) for r in other]
    assert list(first[0]) == ["group", "versus", "metric", "difference", "ci_low", "ci_high", "p_value", "verdict"]
    json.dumps(first)


def test_mean_p_value_is_the_paired_sign_flip_test() -> None:
    correct, versus = models(3, 12, 6, hard=12), models(4, 12, 7, hard=12)
    mine = compare_accuracy(correct, torch.rand(3), versus, torch.rand(4), "g")[0].p_value
    x, y = correct.double().mean(0).numpy(), versus.double().mean(0).numpy()
    reference = scipy_stats.permutation_test((x, y), lambda a, b, axis: np.mean(a - b, axis=axis),
                                             permutation_type="samples", vectorized=True)  # exact: 2^12 patterns
    assert mine == pytest.approx(reference.pvalue)


def test_compare_values() -> None:
    generator = torch.Generator().manual_seed(8)
    low, high = 0.5 + 0.05 * torch.randn(100, generator=generator), 0.6 + 0.05 * torch.randn(80, generator=generator)
    shifted = compare_values(low, high, "noise", "original", "median_max_iou")
    assert shifted.verdict == "lower" and shifted.ci_high < 0 and shifted.p_value < 1e-3
    assert shifted.difference == pytest.approx(np.median(low.numpy()) - np.median(high.numpy()))
    same = compare_values(low, low.clone(), "a", "b", "median_l2_to_original")
    assert same.difference == 0 and same.verdict == "no detectable difference" and same.p_value == 1.0
    similar = compare_values(low[:50], low[50:], "a", "b", "m")
    assert similar.verdict == "no detectable difference" and similar.p_value > 0.05


def test_median_p_value_matches_scipy() -> None:
    generator = torch.Generator().manual_seed(9)
    x, y = torch.randn(30, generator=generator) + 0.3, torch.randn(40, generator=generator)
    mine = compare_values(x, y, "a", "b", "m").p_value
    reference = scipy_stats.permutation_test(
        (x.numpy(), y.numpy()), lambda a, b, axis: np.abs(np.median(a, axis=axis) - np.median(b, axis=axis)),
        permutation_type="independent", vectorized=True, n_resamples=20000, random_state=0, alternative="greater")
    assert mine == pytest.approx(reference.pvalue, abs=0.02)  # both Monte Carlo


def comparison(group: str, versus: str, outcome: str) -> Comparison:
    return Comparison(group, versus, "m", 0.0, 0.0, 0.0, None, outcome)


@pytest.mark.parametrize("accuracy, similarity, expected", [
    ("higher", "lower", "generated dominates"),
    ("no detectable difference", "lower", "generated dominates"),
    ("lower", "lower", "undecided"),
    ("no detectable difference", "higher", "is dominated"),
    ("lower", "higher", "is dominated"),
    ("higher", "higher", "undecided"),
    ("no detectable difference", "no detectable difference", "undecided"),
])
def test_dominance(accuracy: str, similarity: str, expected: str) -> None:
    record = dominance(comparison("generated", "noise@0.05", accuracy),
                       comparison("generated", "noise@0.05", similarity), "noise@0.05")
    assert record == {"group": "noise@0.05", "versus": "generated", "metric": "dominance", "difference": None,
                      "ci_low": None, "ci_high": None, "p_value": None, "verdict": expected}


def test_dominance_needs_generated_minus_baseline() -> None:
    with pytest.raises(ValueError, match="generated minus mean_of_k"):
        dominance(comparison("mean_of_k", "generated", "higher"), comparison("generated", "mean_of_k", "lower"),
                  "mean_of_k")


def test_resolution_shrinks_like_one_over_sqrt_n() -> None:
    generator = torch.Generator().manual_seed(10)
    widths = [resolution(torch.rand(20, n, generator=generator) < 0.9, n_boot=1000) for n in (500, 8000)]
    assert 2.5 < widths[0] / widths[1] < 6
    with pytest.raises(ValueError, match="at least 2 models"):
        resolution(torch.ones(1, 10, dtype=torch.bool))


def test_nearest_distances_hand_computed() -> None:
    references = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]])
    assert nearest_distances(torch.tensor([[3.0, 5.0], [0.0, 0.4]]), references).tolist() == pytest.approx([1, 0.4])
    spread = nearest_distances(references, references, exclude_self=True)
    assert spread.tolist() == pytest.approx([1.0, 18 ** 0.5, 1.0])
    assert nearest_distances(references, references).tolist() == [0, 0, 0]


def test_generalization_copies_and_fresh_samples() -> None:
    generator = torch.Generator().manual_seed(11)
    training, heldout, fresh = (torch.randn(m, 16, generator=generator) for m in (150, 150, 150))
    copies = generalization(training[:60], training, heldout)
    assert copies.coverage == copies.coverage_ci_low == copies.coverage_ci_high == 0
    assert copies.memorization_ratio_median == 0 and copies.distance_to_training.eq(0).all()
    reference = generalization(heldout, training, heldout, is_heldout=True)  # leave-one-out
    new = generalization(fresh, training, heldout)
    assert abs(new.coverage - reference.coverage) < 0.15 and 0.3 < reference.coverage < 0.7  # ~ M / (M + T)
    assert new.coverage_ci_low < new.coverage < new.coverage_ci_high
    assert 0.8 < new.memorization_ratio_median < 1.25 and 0.8 < reference.memorization_ratio_median < 1.25
    record = new.as_dict()
    assert len(record["distance_to_training"]) == len(record["distance_to_heldout"]) == 150
    json.dumps(record)
