import json

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats

from pdiff.stats import (
    DESCRIPTIVE,
    VERDICTS,
    compare_accuracy,
    compare_values,
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
    mean, *descriptive = compare_accuracy(correct, val, correct, val, "same")
    assert [r.metric for r in (mean, *descriptive)] == METRICS
    assert mean.difference == 0 and mean.ci_low < 0 < mean.ci_high and mean.p_value == 1.0
    assert mean.verdict == "no detectable difference" and mean.scope == "generator"
    for r in descriptive:  # median and val-chosen best: a difference, no CI, no verdict
        assert r.difference == 0 and r.ci_low is r.ci_high is r.p_value is None and r.verdict == DESCRIPTIVE
        assert r.group == "same" and r.versus == "original"


def test_fifty_more_examples_is_higher() -> None:
    n = 2000
    versus = models(40, n, 1)
    versus[:, -50:] = False
    group = versus.clone()
    group[:, -50:] = True  # every model right on 50 more examples
    val = torch.rand(40, generator=torch.Generator().manual_seed(2))
    results = compare_accuracy(group, val, versus, val, "better")
    assert all(r.difference == 50 / n for r in results)
    mean = results[0]
    assert mean.verdict == "higher" and 0 < mean.ci_low < 50 / n < mean.ci_high and mean.p_value < 1e-3
    lower = compare_accuracy(versus, val, group, val, "worse")[0]
    assert lower.verdict == "lower" and lower.difference == -50 / n


def test_mean_interval_is_the_variance_components_formula() -> None:
    """Hand-computed: Var = Var_j(d_j) / n + sum over groups of (s2_rows - MS_res / n) / M, with a t quantile."""
    correct, versus = models(6, 300, 12, hard=300), models(5, 300, 13, hard=300)
    correct[:3, :40] = True  # skilled models: a model component to estimate in each group
    versus[:2, :40] = True
    mean = compare_accuracy(correct, torch.rand(6), versus, torch.rand(5), "g")[0]
    y, x = correct.double().numpy(), versus.double().numpy()
    n = y.shape[1]

    def model_terms(z: np.ndarray) -> list[tuple[float, int]]:  # (mean square / M, its df), signed
        m, rows, columns = len(z), z.mean(1), z.mean(0)
        residual = z - rows[:, None] - columns[None, :] + z.mean()
        ms = (residual ** 2).sum() / ((m - 1) * (n - 1))
        assert rows.var(ddof=1) > ms / n  # both groups have a model component here
        return [(rows.var(ddof=1) / m, m - 1), (-ms / (n * m), (m - 1) * (n - 1))]

    d = y.mean(0) - x.mean(0)
    terms = [(d.var(ddof=1) / n, n - 1), *model_terms(y), *model_terms(x)]
    variance = sum(t for t, _ in terms)
    df = variance ** 2 / sum(t * t / f for t, f in terms)  # Satterthwaite
    half = scipy_stats.t.ppf(0.975, df) * variance ** 0.5
    assert mean.difference == pytest.approx(d.mean())
    assert (mean.ci_low, mean.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert mean.p_value == pytest.approx(2 * scipy_stats.t.sf(abs(d.mean()) / variance ** 0.5, df))


def test_method_scope_with_generators() -> None:
    """Generated models tagged with their generator: the between-generator spread widens the CI (scope "method"),
    which is never narrower than the CI that ignores the tags; each generator counts equally in the mean."""
    rng = np.random.default_rng(1)
    parts = []
    for shift in (0.0, 0.6, -0.6):  # three generators of unequal skill
        a, _ = threshold_models(rng, 20, 1000, shift)
        parts.append(a)
    correct = torch.from_numpy(np.concatenate(parts))
    labels = torch.arange(3).repeat_interleave(20)
    versus, _ = threshold_models(rng, 30, 1000, 0.0)
    versus = torch.from_numpy(versus)
    flat = compare_accuracy(correct, torch.zeros(60), versus, torch.zeros(30), "generated")[0]
    method = compare_accuracy(correct, torch.zeros(60), versus, torch.zeros(30), "generated", generators=labels)[0]
    assert flat.scope == "generator" and method.scope == "method"
    assert method.ci_high - method.ci_low > flat.ci_high - flat.ci_low
    per_generator = torch.stack([correct[labels == s].double().mean() for s in range(3)]).mean()
    assert method.difference == pytest.approx(float(per_generator - versus.double().mean()))
    one = compare_accuracy(correct, torch.zeros(60), versus, torch.zeros(30), "generated",
                           generators=torch.zeros(60, dtype=torch.long))[0]
    assert one.scope == "generator" and (one.ci_low, one.ci_high) == (flat.ci_low, flat.ci_high)
    with pytest.raises(ValueError, match="one label per model"):
        compare_accuracy(correct, torch.zeros(60), versus, torch.zeros(30), "g", generators=labels[:10])


def threshold_models(rng: np.random.Generator, m: int, n: int, shift: float) -> tuple[np.ndarray, None]:
    """m models of a threshold process on n fresh examples, their skill shifted by `shift` (bench.calibration's
    process, written out small)."""
    difficulty = rng.normal(-2.0, 1.0, n)
    skill = rng.normal(shift, 0.3, (m, 1))
    return skill + rng.normal(0, 1.0, (m, n)) > difficulty, None


def test_single_model_group_and_best_by_val() -> None:
    versus, versus_val = models(30, 1000, 3), torch.linspace(0.5, 0.9, 30)
    one = versus[[7]]
    results = compare_accuracy(one, torch.tensor([0.8]), versus, versus_val, "ensemble")
    counts = versus.sum(1)
    assert results[2].difference == pytest.approx((counts[7] - counts[29]).item() / 1000)  # best val: last model
    tied = compare_accuracy(versus, torch.zeros(30), versus, versus_val, "ties")  # all tied: first index
    assert tied[2].difference == pytest.approx((counts[0] - counts[29]).item() / 1000)
    assert results[0].ci_low <= results[0].difference <= results[0].ci_high


def test_deterministic_and_json() -> None:
    correct, versus, val = models(20, 1000, 4), models(20, 1000, 5), torch.rand(20)
    first = [r.as_dict() for r in compare_accuracy(correct, val, versus, val, "g", seed=3)]
    assert first == [r.as_dict() for r in compare_accuracy(correct, val, versus, val, "g", seed=3)]
    assert list(first[0]) == ["group", "versus", "metric", "difference", "ci_low", "ci_high", "p_value", "verdict",
                              "scope"]
    json.dumps(first)


def test_compare_values() -> None:
    generator = torch.Generator().manual_seed(8)
    low, high = 0.5 + 0.05 * torch.randn(100, generator=generator), 0.6 + 0.05 * torch.randn(80, generator=generator)
    shifted = compare_values(low, high, "noise", "original", "median_max_iou")
    assert shifted.verdict == "lower" and shifted.ci_high < 0 and shifted.p_value is None
    assert shifted.difference == pytest.approx(np.median(low.numpy()) - np.median(high.numpy()))
    same = compare_values(low, low.clone(), "a", "b", "median_l2_to_original")
    assert same.difference == 0 and same.verdict == "no detectable difference"
    similar = compare_values(low[:50], low[50:], "a", "b", "m")
    assert similar.verdict == "no detectable difference"


def test_compare_values_with_generators_covers_the_spread_between_them() -> None:
    """Generators whose models cluster around generator-specific medians (sd 0.05 between, 0.01 within): the
    one-level interval speaks for the drawn generators only and misses the method's median (0) most of the
    time; the interval with the labels covers it about 95% of the time."""
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(5).repeat_interleave(40)  # 5 generators, 40 models each
    versus = torch.zeros(60)  # a baseline at exactly 0: the true difference is 0
    covered, one_level = 0, 0
    for rep in range(100):
        values = (0.05 * torch.randn(5, generator=generator))[labels] + 0.01 * torch.randn(200, generator=generator)
        method = compare_values(values, versus, "generated", "b", "m", n_boot=200, seed=rep, generators=labels)
        single = compare_values(values, versus, "generated", "b", "m", n_boot=200, seed=rep)
        covered += method.ci_low <= 0 <= method.ci_high
        one_level += single.ci_low <= 0 <= single.ci_high
        assert method.scope == "method" and single.scope == "generator"
    assert covered >= 88 and one_level <= 50
    with pytest.raises(ValueError, match="one label per value"):
        compare_values(versus, versus, "a", "b", "m", generators=labels)


def test_resolution_shrinks_like_one_over_sqrt_n() -> None:
    generator = torch.Generator().manual_seed(10)
    widths = [resolution(torch.rand(20, n, generator=generator) < 0.9) for n in (500, 8000)]
    assert 2.5 < widths[0] / widths[1] < 6
    with pytest.raises(ValueError, match="at least 2 models"):
        resolution(torch.ones(1, 10, dtype=torch.bool))
