"""Confidence intervals and verdicts for comparing groups of models on one small test set.

Groups ("original", "generated", "ensemble", ...) differ by a few test examples out of a few thousand, and
three sources of chance hide in such a difference: which test examples were drawn, which models a group
happened to contain and, for generated models, which generators were trained. Models and examples are
crossed (every model is scored on the same examples), so the variance of a difference of mean accuracies has
a model part, an example part and a model x example interaction part. A two-level bootstrap that resamples
models and examples counts the interaction about three times (Owen 2007, "The pigeonhole bootstrap", Ann.
Appl. Stat. 1:386), and its intervals are too wide. `compare_accuracy` instead estimates the variance
components by the method of moments, so that each counts once:

    Var(mean_A - mean_B) = Var_j(d_j) / n + sum over groups of max(0, s2_rows - MS_res / n) / M

where d_j is the difference of the two groups' fraction right on example j (this term carries the example
and interaction parts, paired, so the common difficulty of an example cancels), s2_rows is the variance of
the group's model accuracies and MS_res the residual mean square of its [M, n] matrix (the interaction, which
s2_rows also holds, already counted in the first term). With generators (generated models tagged by the
generator that drew them) the generated group's models are nested in generators: a between-generator
component estimated from the generator means joins, so the interval speaks for the method, not one
generator. The interval is the estimate +- t * SE, with Satterthwaite's degrees of freedom, or G - 1 when a
spread between G generators is estimated (Satterthwaite's estimate grows when that spread happens to come
out small, and the interval then covered too rarely). Its calibration
(coverage of the true difference, estimated SE / true SE) is measured by `python -m bench.calibration`
(BENCHMARKS.md "calibration"); tests/test_stats.py keeps the coverage in a band at reduced repetitions.

**Verdicts rest on that CI alone**: "higher" when it lies above 0, "lower" when below, else "no detectable
difference". The mean's p-value is the same t-test, so p < 0.05 exactly when the CI excludes 0. The median
and the val-chosen best are reported as descriptive differences without a CI or verdict: a val-chosen best
is a maximum over the group, whose expectation grows with the group's size (groups of 200 and 100 models of
one process differ in expectation) and whose bootstrap is badly behaved; no calibrated interval is offered
for them. The similarity comparisons (`compare_values`) resample models only; their calibration is measured
by the same benchmark (resampling the shared originals as well made the intervals too wide). With several
generators they, too, hold the spread between generators (a t-interval over the per-generator medians). Each verdict
answers one comparison; a run prints many, with no family-wise control.

Claims and the accuracy-novelty plane are decided from these CIs by `pdiff.verdicts`.

Every draw comes from a seeded generator, one independent stream per purpose: results are the same for a
seed. Accuracies and differences are fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats

VERDICTS = ("higher", "lower", "no detectable difference")
DESCRIPTIVE = "descriptive (no verdict)"
SCOPES = ("generator", "method")  # what a CI covers: one trained generator's models, or the generator family
BLOCK = 256  # bootstrap replicates at a time: memory is bounded by [BLOCK, M] indices
EXAMPLES, MODELS = range(2)  # random streams


@dataclass
class Comparison:
    """statistic(group) - statistic(versus) for one metric, its 95% CI and the verdict.

    ci_low, ci_high and p_value are None for a descriptive difference (verdict DESCRIPTIVE). scope: "generator"
    when the CI covers test examples and models only, "method" when it also covers retraining the generator.
    """

    group: str
    versus: str
    metric: str
    difference: float
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    verdict: str
    scope: str = SCOPES[0]

    def as_dict(self) -> dict:
        return asdict(self)


def verdict(ci_low: float, ci_high: float) -> str:
    """"higher" when the CI of the difference lies above 0, "lower" when below, else no detectable difference."""
    if ci_low > 0:
        return VERDICTS[0]
    if ci_high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


@dataclass
class MeanDifference:
    """mean accuracy of A minus B with its estimated standard error and Satterthwaite degrees of freedom."""

    difference: float
    se: float
    df: float
    scope: str

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se if self.se > 0 else 0.0
        return self.difference - half, self.difference + half

    def p_value(self) -> float:
        if self.se == 0:
            return 1.0 if self.difference == 0 else 0.0
        return float(2 * stats.t.sf(abs(self.difference) / self.se, self.df))


def mean_difference(correct: torch.Tensor, versus_correct: torch.Tensor, generators: torch.Tensor | None = None,
                    versus_generators: torch.Tensor | None = None) -> MeanDifference:
    """Mean test accuracy of `correct` [M, n] minus `versus_correct` [K, n] (bool, same examples, same order).

    generators [M] / versus_generators [K]: optional integer labels of the generator that drew each model. With
    two or more generators in a group, each generator counts equally in its group's mean and the between-
    generator variance is in the SE (scope "method"); the SE is then never below the one that ignores the
    labels. The variance components are those of the module docstring.
    """
    groups = [_GroupMoments(correct.cpu().bool(), generators),
              _GroupMoments(versus_correct.cpu().bool(), versus_generators)]
    n = correct.shape[1]
    d = groups[0].column_means - groups[1].column_means  # [n]
    terms = [(float(d.var()) / n if n > 1 else 0.0, n - 1)] + groups[0].terms + groups[1].terms
    variance = sum(value for value, _ in terms)
    denominator = sum(value * value / df for value, df in terms if value != 0)
    df = variance**2 / denominator if denominator > 0 else float("inf")
    spread = [g.generators - 1 for g in groups if g.generator_spread]
    if spread:  # a spread of G generator means is known to G - 1 degrees of freedom, whatever else is summed in
        df = min(spread)
    scope = SCOPES[1] if any(g.nested for g in groups) else SCOPES[0]
    return MeanDifference(float(d.mean()), variance**0.5, df, scope)


class _GroupMoments:
    """One group's column means [n] (each generator weighted equally) and the variance terms of its mean.

    terms: (value, degrees of freedom) of each mean square in Var(group mean), signed, apart from the paired
    example term; their sum is the group's model (or generator) component, and Satterthwaite's formula reads
    the degrees of freedom off them. A component estimated below 0 is 0 (no terms).
    """

    def __init__(self, correct: torch.Tensor, generators: torch.Tensor | None):
        y = correct.double()
        labels = torch.zeros(len(y), dtype=torch.long) if generators is None else torch.as_tensor(generators)
        if labels.shape != (len(y),):
            raise ValueError(f"generators must have one label per model ({len(y)}), got {tuple(labels.shape)}")
        units = [y[labels == s] for s in labels.unique()]
        self.generators, self.nested, self.generator_spread = len(units), len(units) >= 2, False
        flat = _scaled(_row_terms(y), 1 / len(y))  # every model its own unit: the generators ignored
        if not self.nested:
            self.column_means, self.terms = y.mean(0), flat
            return
        G = len(units)
        per_unit = torch.stack([u.mean(0) for u in units])  # [G, n]
        self.column_means = per_unit.mean(0)
        # a generator mean's variance holds the generator's own spread and its models' (within) spread
        between = _scaled(_row_terms(per_unit), 1 / G)
        inverse_size = float(torch.tensor([1 / len(u) for u in units]).mean())
        within_df = sum(len(u) - 1 for u in units)
        within = [term for u in units if len(u) > 1
                  for term in _scaled(_row_terms(u, clip=False), (len(u) - 1) / within_df * inverse_size / G)]
        self.generator_spread = sum(v for v, _ in between) > sum(v for v, _ in within)
        if not self.generator_spread:  # the generators' own spread estimated <= 0: their models' spread alone
            between = within if sum(v for v, _ in within) > 0 else []
        # never narrower than the interval that ignores the generators
        self.terms = between if sum(v for v, _ in between) >= sum(v for v, _ in flat) else flat


def _row_terms(y: torch.Tensor, clip: bool = True) -> list[tuple[float, float]]:
    """Var of one row's effect in y [U, n] (rows: models or generators) as mean-square terms: s2_rows - MS_res / n.

    The row means' variance also holds the row x example interaction / n, which the paired example term counts,
    so MS_res / n comes off. (value, df) pairs; none when U < 2 or (with `clip`) when the estimate is below 0.
    """
    U, n = y.shape
    if U < 2:
        return []
    rows = y.mean(1)
    if n < 2:
        return [(float(rows.var()), U - 1)]
    residual = y - rows[:, None] - y.mean(0)[None, :] + y.mean()
    ms_residual = float((residual**2).sum()) / ((U - 1) * (n - 1))
    terms = [(float(rows.var()), U - 1), (-ms_residual / n, (U - 1) * (n - 1))]
    return terms if not clip or sum(v for v, _ in terms) > 0 else []


def _scaled(terms: list[tuple[float, float]], factor: float) -> list[tuple[float, float]]:
    return [(value * factor, df) for value, df in terms]


def compare_accuracy(correct: torch.Tensor, val: torch.Tensor, versus_correct: torch.Tensor, versus_val: torch.Tensor,
                     group: str, versus: str = "original", n_boot: int = 2000, seed: int = 0,
                     generators: torch.Tensor | None = None, versus_generators: torch.Tensor | None = None,
                     ) -> list[Comparison]:
    """Mean, median and val-chosen test accuracy of `group` minus those of `versus`.

    correct [M, n] / versus_correct [K, n]: whether model i is right on test example j (same examples, same
    order); val [M] / versus_val [K]: validation accuracies, which choose the "best" model (ties: first index).
    The mean gets the variance-components CI, p-value and verdict of `mean_difference`; the median and the
    val-chosen best are descriptive (see the module docstring). n_boot and seed are accepted for callers of
    the earlier bootstrap; the closed-form interval draws nothing.
    """
    _check_correct(correct, val, "correct", "val")
    _check_correct(versus_correct, versus_val, "versus_correct", "versus_val")
    if correct.shape[1] != versus_correct.shape[1]:
        raise ValueError(f"correct has {correct.shape[1]} test examples, versus_correct {versus_correct.shape[1]}")
    correct, versus_correct = correct.cpu().bool(), versus_correct.cpu().bool()
    n, m, k = correct.shape[1], len(correct), len(versus_correct)
    counts, versus_counts = correct.sum(1), versus_correct.sum(1)  # [M], [K]: examples right
    mean = mean_difference(correct, versus_correct, generators, versus_generators)
    if mean.scope == SCOPES[0]:  # from integer counts: one rounding, so 50 examples is exactly 50 / n
        mean.difference = (k * int(counts.sum()) - m * int(versus_counts.sum())) / (m * k * n)
    low, high = mean.interval()
    best, versus_best = int(val.cpu().argmax()), int(versus_val.cpu().argmax())
    descriptive = [
        ("median_test_accuracy", float(median(counts.double()) - median(versus_counts.double())) / n),
        ("best_val_chosen_test_accuracy", (int(counts[best]) - int(versus_counts[versus_best])) / n),
    ]
    return [Comparison(group, versus, "mean_test_accuracy", mean.difference, low, high, mean.p_value(),
                       verdict(low, high), mean.scope),
            *(Comparison(group, versus, metric, difference, None, None, None, DESCRIPTIVE, mean.scope)
              for metric, difference in descriptive)]


def compare_values(values: torch.Tensor, versus_values: torch.Tensor, group: str, versus: str, metric: str,
                   n_boot: int = 2000, seed: int = 0, generators: torch.Tensor | None = None) -> Comparison:
    """Median of a per-model value (e.g. max IoU or L2 distance to the originals) of `group` minus `versus`'s.

    values [M], versus_values [K]. The CI resamples the models within each group, one level only: each value
    is taken as a property of one model given the fixed originals and test set. BENCHMARKS.md "calibration"
    measures its coverage for max IoU and L2 to shared originals (resampling the originals too made the
    interval too wide there). No p-value: a label-permutation test asks whether the groups are exchangeable,
    not whether their medians differ.

    generators [M]: the generator that drew each of `group`'s models. With two or more, the difference is the
    mean over generators of (their models' median - versus's median), each generator counting equally as in
    `mean_difference`, and the interval speaks for the method (scope "method"): mean +- t(df) * SE, SE^2 = the
    variance of the G per-generator differences / G (the spread between generators, which holds their models'
    own spread) + the bootstrap variance of versus's median, df by Satterthwaite (G - 1 for the first part, the
    bootstrap's as exact); never narrower than the one-level interval. Its coverage is measured by
    `python -m bench.calibration`.
    """
    x, y = values.double().flatten(), versus_values.double().flatten()
    if len(x) == 0 or len(y) == 0 or x.isnan().any() or y.isnan().any():
        raise ValueError("compare_values needs at least one value in each group, and no NaN")
    generator = random_stream(seed, MODELS)
    replicates, versus_medians = [], []
    for b in blocks(n_boot):
        xs = x[torch.randint(len(x), (b, len(x)), generator=generator)]
        ys = median(y[torch.randint(len(y), (b, len(y)), generator=generator)])
        replicates.append(median(xs) - ys)
        versus_medians.append(ys)
    labels = None if generators is None else torch.as_tensor(generators).flatten()
    if labels is not None and labels.shape != x.shape:
        raise ValueError(f"generators must have one label per value ({len(x)}), got {tuple(labels.shape)}")
    if labels is None or len(labels.unique()) < 2:
        return _comparison(group, versus, metric, float(median(x) - median(y)), torch.cat(replicates), None)
    per_generator = torch.stack([median(x[labels == g]) for g in labels.unique()]) - median(y)  # [G]
    G = len(per_generator)
    between, versus_part = float(per_generator.var()) / G, float(torch.cat(versus_medians).var())
    se = (between + versus_part) ** 0.5
    # Satterthwaite: the between part is known to G - 1 degrees of freedom, versus's bootstrap part precisely
    df = (between + versus_part) ** 2 / (between**2 / (G - 1)) if between > 0 else float("inf")
    one_level_low, one_level_high = percentile_interval(torch.cat(replicates))
    half = max(float(stats.t.ppf(0.975, df)) * se, (one_level_high - one_level_low) / 2)
    difference = float(per_generator.mean())
    low, high = difference - half, difference + half
    return Comparison(group, versus, metric, difference, low, high, None, verdict(low, high), SCOPES[1])


def resolution(correct: torch.Tensor) -> float:
    """Half-width of the 95% CI of the mean-accuracy difference between two halves of one group of models.

    correct [M, n], M >= 2; the halves are rows 0, 2, 4, ... and 1, 3, 5, ...; the CI is `mean_difference`'s.
    The halves come from the same process, so this says "on this test set, groups like these resolve
    differences of about +- the returned fraction".
    """
    if correct.dim() != 2 or len(correct) < 2:
        raise ValueError(f"resolution needs a [M, n] matrix of at least 2 models, got {tuple(correct.shape)}")
    low, high = mean_difference(correct[0::2], correct[1::2]).interval()
    return (high - low) / 2


def _comparison(group: str, versus: str, metric: str, difference: float, replicates: torch.Tensor,
                p_value: float | None) -> Comparison:
    low, high = percentile_interval(replicates)
    return Comparison(group, versus, metric, float(difference), low, high, p_value, verdict(low, high))


def _check_correct(correct: torch.Tensor, val: torch.Tensor, name: str, val_name: str) -> None:
    if correct.dim() != 2 or correct.shape[0] == 0 or correct.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [M, n] matrix, got shape {tuple(correct.shape)}")
    if val.shape != (correct.shape[0],):
        raise ValueError(f"{val_name} must have one entry per model ({correct.shape[0]}), got {tuple(val.shape)}")


def random_stream(seed: int, stream: int) -> torch.Generator:
    """An independent random stream per purpose, derived from the seed."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def blocks(total: int, size: int = BLOCK) -> list[int]:
    if total < 1:
        raise ValueError(f"need at least one resample, got {total}")
    return [min(size, total - start) for start in range(0, total, size)]


def resample_counts(n: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """Multinomial counts [b, n] (float32): how often each of n items is drawn in each of b resamples of n."""
    draws = torch.randint(n, (b, n), generator=generator)
    return torch.zeros(b, n).scatter_add_(1, draws, torch.ones(b, n))


def median(x: torch.Tensor) -> torch.Tensor:
    """Median along the last dimension; the mean of the two middle values for an even count (as numpy)."""
    m = x.shape[-1]
    low = x.kthvalue((m - 1) // 2 + 1, -1).values
    return low if m % 2 else (low + x.kthvalue(m // 2 + 1, -1).values) / 2


def percentile_interval(replicates: torch.Tensor) -> tuple[float, float]:
    """95% percentile interval of bootstrap replicates [B]."""
    low, high = np.percentile(replicates.double().numpy(), [2.5, 97.5])
    return float(low), float(high)
