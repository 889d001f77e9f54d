"""Confidence intervals, p-values and verdicts for comparing groups of models on one small test set.

Groups ("original", "generated", "ensemble", ...) differ by a few test examples out of a few thousand, and
two sources of chance hide in such a difference: which test examples were drawn, and which models a
group happened to contain. The CI of every accuracy comparison is a two-level paired bootstrap that
resamples both: the test examples (one resample shared by both groups, so their common difficulty cancels)
and, independently, the models within each group. **Verdicts rest on this CI alone**: "higher" when it lies
above 0, "lower" when below, else "no detectable difference".

Each p-value comes from the classical test named beside it, and each ignores one source of chance:
- mean test accuracy: paired sign-flip permutation test over test examples of d_j = (fraction of the
  group's models right on j) - (the same for `versus`). It holds the models fixed: it asks whether these
  very models differ on the population of test examples, not whether new models from the same process would.
- median test accuracy: permutation of model labels between the groups. It holds the test set fixed:
  a difference it finds may not survive another draw of test examples.
- val-chosen best: exact McNemar test of the two chosen models. It holds both models fixed and ignores that
  choosing by validation accuracy is itself chance.
So a small p-value with a CI that covers 0 is possible; the p-values are there for readers who expect them.
In a simulation of two groups of 50 models drawn from one process (models differ in skill, n = 2000), the
CI gave a verdict in 6% / 2% / 1% of 100 cases (mean / median / best), while p < 0.05 in 57% / 5% / 25%.

Every draw comes from a seeded generator, one independent stream per purpose: results are the same for a
seed, and the CIs do not move when the permutation count does. Accuracies and differences are fractions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import stats

VERDICTS = ("higher", "lower", "no detectable difference")
DOMINANCE_VERDICTS = ("generated dominates", "is dominated", "undecided")
PERMUTATIONS = 4999  # Monte Carlo resamples of each permutation test: p-values down to 2e-4
BLOCK = 256  # bootstrap replicates at a time: memory is bounded by [n, BLOCK] weights and [M, BLOCK] accuracies
EXAMPLES, MODELS, SIGN_FLIPS, LABELS = range(4)  # random streams


@dataclass
class Comparison:
    """statistic(group) - statistic(versus) for one metric, its 95% percentile bootstrap CI and the verdict."""

    group: str
    versus: str
    metric: str
    difference: float
    ci_low: float
    ci_high: float
    p_value: float | None
    verdict: str

    def as_dict(self) -> dict:
        return asdict(self)


def verdict(ci_low: float, ci_high: float) -> str:
    """"higher" when the CI of the difference lies above 0, "lower" when below, else no detectable difference."""
    if ci_low > 0:
        return VERDICTS[0]
    if ci_high < 0:
        return VERDICTS[1]
    return VERDICTS[2]


def compare_accuracy(correct: torch.Tensor, val: torch.Tensor, versus_correct: torch.Tensor, versus_val: torch.Tensor,
                     group: str, versus: str = "original", n_boot: int = 2000, seed: int = 0) -> list[Comparison]:
    """Mean, median and val-chosen test accuracy of `group` minus those of `versus`, each with CI and p-value.

    correct [M, n] / versus_correct [K, n]: whether model i is right on test example j (same examples, same
    order); val [M] / versus_val [K]: validation accuracies, which choose the "best" model (ties: first index).
    In a bootstrap replicate the best is the resampled model of highest val accuracy: val stays fixed, as
    there are no validation predictions to resample. A group of one model is that model in every replicate.
    """
    _check_correct(correct, val, "correct", "val")
    _check_correct(versus_correct, versus_val, "versus_correct", "versus_val")
    correct, versus_correct = correct.cpu().bool(), versus_correct.cpu().bool()
    val, versus_val = val.cpu(), versus_val.cpu()
    if correct.shape[1] != versus_correct.shape[1]:
        raise ValueError(f"correct has {correct.shape[1]} test examples, versus_correct {versus_correct.shape[1]}")
    n, m, k = correct.shape[1], len(correct), len(versus_correct)
    counts, versus_counts = correct.sum(1), versus_correct.sum(1)  # [M], [K]: examples right
    best, versus_best = int(val.argmax()), int(versus_val.argmax())
    differences = [  # from integer counts: one rounding, so a difference of 50 examples is exactly 50 / n
        (k * int(counts.sum()) - m * int(versus_counts.sum())) / (m * k * n),
        float(_median(counts.double()) - _median(versus_counts.double())) / n,
        (int(counts[best]) - int(versus_counts[versus_best])) / n,
    ]
    replicates = _accuracy_bootstrap([(correct, val), (versus_correct, versus_val)], n_boot, seed)
    replicates = replicates[0] - replicates[1]  # [n_boot, 3]
    per_example = k * correct.sum(0) - m * versus_correct.sum(0)  # [n]: M K d_j, an integer
    p_values = [
        _sign_flip_p(per_example, _generator(seed, SIGN_FLIPS)),
        _label_permutation_p(counts.double(), versus_counts.double(), _generator(seed, LABELS)),
        _mcnemar_p(correct[best], versus_correct[versus_best]),
    ]
    metrics = ("mean_test_accuracy", "median_test_accuracy", "best_val_chosen_test_accuracy")
    return [_comparison(group, versus, metric, difference, replicates[:, i], p)
            for i, (metric, difference, p) in enumerate(zip(metrics, differences, p_values, strict=True))]


def compare_values(values: torch.Tensor, versus_values: torch.Tensor, group: str, versus: str, metric: str,
                   n_boot: int = 2000, seed: int = 0) -> Comparison:
    """Median of a per-model value (e.g. max IoU or L2 distance to the originals) of `group` minus `versus`'s.

    values [M], versus_values [K]. The CI resamples the models within each group, one level only: each value
    is a property of one model given the fixed originals. The p-value permutes model labels between the groups.
    """
    x, y = values.double().flatten(), versus_values.double().flatten()
    if len(x) == 0 or len(y) == 0 or x.isnan().any() or y.isnan().any():
        raise ValueError("compare_values needs at least one value in each group, and no NaN")
    generator = _generator(seed, MODELS)
    replicates = []
    for b in _blocks(n_boot):
        xs = x[torch.randint(len(x), (b, len(x)), generator=generator)]
        ys = y[torch.randint(len(y), (b, len(y)), generator=generator)]
        replicates.append(_median(xs) - _median(ys))
    p = _label_permutation_p(x, y, _generator(seed, LABELS))
    return _comparison(group, versus, metric, float(_median(x) - _median(y)), torch.cat(replicates), p)


def dominance(accuracy: Comparison, similarity: Comparison, group: str, versus: str = "generated") -> dict:
    """Where `versus` (generated) stands against the baseline `group` in the accuracy-novelty plane.

    The critique of p-diff (Zeng et al. 2025) places every method on two axes, accuracy and similarity to the
    training checkpoints: a generator is only interesting if no cheap baseline (noise added to checkpoints,
    their mean, ...) is at least as accurate while being less similar. Both inputs are GENERATED minus
    BASELINE: `accuracy` of mean test accuracy, `similarity` of e.g. median max IoU to the originals.
    Verdict "generated dominates": generated is not less accurate and is less similar; "is dominated"
    (generated is, by the baseline): the baseline is not less accurate and is less similar; else "undecided".
    The record has the Comparison's keys, with None where a number has no meaning.
    """
    for c in (accuracy, similarity):
        if (c.group, c.versus) != (versus, group):
            raise ValueError(f"dominance needs {versus} minus {group}, got {c.metric} of {c.group} minus {c.versus}")
    if accuracy.verdict != "lower" and similarity.verdict == "lower":
        outcome = DOMINANCE_VERDICTS[0]
    elif accuracy.verdict != "higher" and similarity.verdict == "higher":
        outcome = DOMINANCE_VERDICTS[1]
    else:
        outcome = DOMINANCE_VERDICTS[2]
    return {"group": group, "versus": versus, "metric": "dominance", "difference": None, "ci_low": None,
            "ci_high": None, "p_value": None, "verdict": outcome}


def resolution(correct: torch.Tensor, n_boot: int = 2000, seed: int = 0) -> float:
    """Half-width of the 95% CI of the mean-accuracy difference between two halves of one group of models.

    correct [M, n], M >= 2; the halves are rows 0, 2, 4, ... and 1, 3, 5, ...; the CI is the two-level
    bootstrap of `compare_accuracy`. The halves come from the same process, so this says "on this test
    set, groups like these resolve differences of about ± the returned fraction".
    """
    if correct.dim() != 2 or len(correct) < 2:
        raise ValueError(f"resolution needs a [M, n] matrix of at least 2 models, got {tuple(correct.shape)}")
    halves = [(rows, torch.zeros(len(rows))) for rows in (correct[0::2], correct[1::2])]
    replicates = _accuracy_bootstrap(halves, n_boot, seed)
    low, high = _interval(replicates[0][:, 0] - replicates[1][:, 0])
    return (high - low) / 2


@dataclass
class Generalization:
    """How a set of models sits between the training checkpoints and held-out checkpoints, in weight space.

    memorization_ratio_median: median over models of (distance to nearest training checkpoint) / (distance to
    nearest held-out one); near 0 for copies of training checkpoints, about 1 for new draws of the same process.
    coverage: fraction of held-out checkpoints whose nearest model is closer than their nearest training
    checkpoint, with its 95% bootstrap CI. distance_to_training, distance_to_heldout: [M] per model.
    """

    memorization_ratio_median: float
    coverage: float
    coverage_ci_low: float
    coverage_ci_high: float
    distance_to_training: torch.Tensor
    distance_to_heldout: torch.Tensor

    def as_dict(self) -> dict:
        return {"memorization_ratio_median": self.memorization_ratio_median, "coverage": self.coverage,
                "coverage_ci_low": self.coverage_ci_low, "coverage_ci_high": self.coverage_ci_high,
                "distance_to_training": self.distance_to_training.tolist(),
                "distance_to_heldout": self.distance_to_heldout.tolist()}


def nearest_distances(vectors: torch.Tensor, references: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """L2 distance [M] (float64) of each of `vectors` [M, D] to its nearest row of `references` [K, D].

    With `exclude_self` (vectors are the references, M = K) a row is not its own neighbour. The nearest row is
    found from the fast matrix-product distances and its distance recomputed directly, so a copy is at 0.
    """
    if exclude_self and len(vectors) != len(references):
        raise ValueError(f"exclude_self needs vectors to be the references, got {len(vectors)} and {len(references)}")
    distances = _distance_matrix(vectors, references)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    nearest = distances.argmin(1)
    return (vectors.double() - references.double()[nearest]).norm(dim=1)


def generalization(vectors: torch.Tensor, training: torch.Tensor, heldout: torch.Tensor, n_boot: int = 1000,
                   seed: int = 0, is_heldout: bool = False) -> Generalization:
    """Memorization ratio and coverage of models `vectors` [M, D] given `training` [T, D] and `heldout` [H, D].

    All in the same standardised units. Coverage is Naeem et al. (2020)'s idea moved to weight space: a
    held-out checkpoint is covered when some model is closer to it than any training checkpoint is. Copies
    of training checkpoints cover nothing (a tie is not closer: "closer" means by more than a relative 1e-9,
    above rounding); fresh draws of the training process cover about as much as the held-out set itself.
    `is_heldout`: vectors ARE the held-out set (the reference figure). Then a held-out checkpoint is not its own
    neighbour (leave-one-out) for either measure. A model that copies a held-out checkpoint has ratio inf.
    The CI resamples the held-out checkpoints and, independently, the models (with `is_heldout` one resample
    serves both, as they are the same checkpoints); training is fixed. A resample of
    M models with replacement holds only about 63% distinct ones, and fewer models cover less, so the
    replicates sit below the estimate (a plain percentile CI missed the truth in 70% of simulated cases);
    the percentile interval is therefore taken of the replicates shifted to have the estimate as their mean
    (95% of simulated cases then contain the truth), and clipped to [0, 1].
    """
    if is_heldout and vectors.shape != heldout.shape:
        raise ValueError(f"is_heldout needs vectors to be the held-out set, got {tuple(vectors.shape)} and "
                         f"{tuple(heldout.shape)}")
    to_training = nearest_distances(vectors, training)
    to_heldout = nearest_distances(vectors, heldout, exclude_self=is_heldout)
    heldout_to_training = nearest_distances(heldout, training)  # [H]
    model_to_heldout = _distance_matrix(vectors, heldout)  # [M, H]
    if is_heldout:
        model_to_heldout.fill_diagonal_(float("inf"))
    covers = (model_to_heldout < heldout_to_training * (1 - 1e-9)).double()  # [M, H]: model i covers held-out h
    generator = _generator(seed, EXAMPLES)
    replicates = []
    for b in _blocks(n_boot):
        heldout_counts = _resample_counts(len(heldout), b, generator)  # [b, H]
        model_counts = heldout_counts if is_heldout else _resample_counts(len(vectors), b, generator)
        covered = (model_counts.double() @ covers) > 0  # [b, H]: some resampled model covers h
        replicates.append((covered * heldout_counts).sum(1) / len(heldout))
    coverage = covers.amax(0).mean().item()
    replicates = torch.cat(replicates)
    low, high = _interval(replicates - replicates.mean() + coverage)  # recentred: see the docstring
    return Generalization(float(_median(to_training / to_heldout)), coverage, max(low, 0.0), min(high, 1.0),
                          to_training, to_heldout)


def _comparison(group: str, versus: str, metric: str, difference: float, replicates: torch.Tensor,
                p_value: float | None) -> Comparison:
    low, high = _interval(replicates)
    return Comparison(group, versus, metric, float(difference), low, high, p_value, verdict(low, high))


def _check_correct(correct: torch.Tensor, val: torch.Tensor, name: str, val_name: str) -> None:
    if correct.dim() != 2 or correct.shape[0] == 0 or correct.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty [M, n] matrix, got shape {tuple(correct.shape)}")
    if val.shape != (correct.shape[0],):
        raise ValueError(f"{val_name} must have one entry per model ({correct.shape[0]}), got {tuple(val.shape)}")


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent random stream per purpose, derived from the seed."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def _blocks(total: int, size: int = BLOCK) -> list[int]:
    if total < 1:
        raise ValueError(f"need at least one resample, got {total}")
    return [min(size, total - start) for start in range(0, total, size)]


def _resample_counts(n: int, b: int, generator: torch.Generator) -> torch.Tensor:
    """Multinomial counts [b, n] (float32): how often each of n items is drawn in each of b resamples of n."""
    draws = torch.randint(n, (b, n), generator=generator)
    return torch.zeros(b, n).scatter_add_(1, draws, torch.ones(b, n))


def _median(x: torch.Tensor) -> torch.Tensor:
    """Median along the last dimension; the mean of the two middle values for an even count (as numpy)."""
    m = x.shape[-1]
    low = x.kthvalue((m - 1) // 2 + 1, -1).values
    return low if m % 2 else (low + x.kthvalue(m // 2 + 1, -1).values) / 2


def _interval(replicates: torch.Tensor) -> tuple[float, float]:
    """95% percentile interval of bootstrap replicates [B]."""
    low, high = np.percentile(replicates.double().numpy(), [2.5, 97.5])
    return float(low), float(high)


def _val_rank(val: torch.Tensor) -> torch.Tensor:
    """Rank [M] of each model by validation accuracy, 0 = best; ties go to the lower index (as torch.argmax)."""
    order = np.lexsort((np.arange(len(val)), -val.double().numpy()))
    rank = np.empty(len(val), dtype=np.int64)
    rank[order] = np.arange(len(val))
    return torch.from_numpy(rank)


def _accuracy_bootstrap(groups: list[tuple[torch.Tensor, torch.Tensor]], n_boot: int, seed: int,
                        ) -> list[torch.Tensor]:
    """Replicates [n_boot, 3] of (mean, median, val-chosen) test accuracy of each (correct [M, n], val [M]) group.

    All groups see the same resampled test examples in a replicate (paired); each group's models are resampled
    on their own. Example resamples are multinomial weights [n, b], so the accuracy of every model in b
    replicates is one product correct @ weights / n, exact in float32 (integer sums below 2^24).
    """
    n = groups[0][0].shape[1]
    matrices = [correct.float() for correct, _ in groups]
    ranks = [_val_rank(val) for _, val in groups]
    examples, models = _generator(seed, EXAMPLES), _generator(seed, MODELS)
    replicates: list[list[torch.Tensor]] = [[] for _ in groups]
    for b in _blocks(n_boot):
        weights = _resample_counts(n, b, examples).T  # [n, b]
        for matrix, rank, out in zip(matrices, ranks, replicates, strict=True):
            right = (matrix @ weights).T  # [b, M]: examples right, float32 integers
            m = right.shape[1]
            drawn = torch.randint(m, (b, m), generator=models)  # [b, M] model indices
            resampled = right.gather(1, drawn)
            chosen = drawn.gather(1, rank[drawn].argmin(1, keepdim=True))  # [b, 1]: best val among those drawn
            statistics = [resampled.double().mean(1), _median(resampled), right.gather(1, chosen)[:, 0]]
            out.append(torch.stack([s.double() for s in statistics], 1) / n)
    return [torch.cat(out) for out in replicates]


def _sign_flip_p(differences: torch.Tensor, generator: torch.Generator, permutations: int = PERMUTATIONS) -> float:
    """Two-sided p of sum(differences) [n] under random sign flips (paired examples); exact for 12 or fewer.

    Integer differences keep the comparison with the observed sum exact. Zeros never change the sum: dropped.
    The signs are the bits of random bytes (one draw per 8 signs).
    """
    d = differences[differences != 0].double()
    if len(d) == 0:
        return 1.0
    total, observed = d.sum(), d.sum().abs()
    if 2 ** len(d) <= permutations:  # every sign pattern once
        patterns = (torch.arange(2 ** len(d))[:, None] >> torch.arange(len(d))) & 1
        return (2 * (patterns.double() @ d) - total).abs().ge(observed).double().mean().item()
    shifts = torch.arange(8, dtype=torch.uint8)
    hits = 0
    for b in _blocks(permutations, 1024):
        bytes_ = torch.randint(256, (b, -(-len(d) // 8)), generator=generator, dtype=torch.uint8)
        keep = ((bytes_[:, :, None] >> shifts) & 1).view(b, -1)[:, :len(d)]  # [b, n]: 1 keeps d_j, 0 flips it
        hits += int((2 * (keep.double() @ d) - total).abs().ge(observed).sum())
    return (1 + hits) / (1 + permutations)


def _label_permutation_p(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator,
                         permutations: int = PERMUTATIONS) -> float:
    """Two-sided Monte Carlo p of median(x) - median(y) when the labels of the pooled values are shuffled.

    A shuffle is a uniform random subset of len(x) pooled values for x, drawn by selection sampling along
    the sorted pool (value j joins with probability needed / remaining), vectorised over shuffles: no sort
    per shuffle. The medians are read off the running member counts along the sorted pool.
    """
    pool = torch.cat([x, y]).double().sort().values
    m, total = len(x), len(x) + len(y)
    observed = (_median(x.double()) - _median(y.double())).abs()
    remaining = torch.arange(total, 0, -1, dtype=torch.float64)[:, None]
    hits = 0
    for b in _blocks(permutations, max(256, 2**22 // total)):  # [N, b] float64 draws: 32 MiB at most
        # uniform [0, 1) times the values remaining is < needed with probability needed / remaining, and always
        # when needed == remaining (in float64 u * r < r for every u < 1): each subset has exactly m members
        scaled = torch.rand(total, b, generator=generator, dtype=torch.float64) * remaining
        needed = torch.empty(total + 1, b)  # [N + 1, b]: x members still to draw, float32 integers
        needed[0] = m
        for j in range(total):
            torch.sub(needed[j], (scaled[j] < needed[j]).float(), out=needed[j + 1])
        in_x = (m - needed[1:]).T.contiguous()  # [b, N]: x members among the first j + 1 sorted values
        in_y = torch.arange(1, total + 1, dtype=torch.float32) - in_x
        statistic = _running_median(pool, in_x, m) - _running_median(pool, in_y, total - m)
        hits += int(statistic.abs().ge(observed * (1 - 1e-12)).sum())
    return (1 + hits) / (1 + permutations)


def _running_median(pool: torch.Tensor, running: torch.Tensor, size: int) -> torch.Tensor:
    """Median [b] of the `size` members of the sorted `pool` [N] whose running counts along it are `running` [b, N].

    The r-th member sits where the running count first reaches r.
    """
    ranks = torch.tensor([(size - 1) // 2 + 1, size // 2 + 1], dtype=running.dtype).expand(len(running), 2)
    return pool[torch.searchsorted(running, ranks.contiguous())].mean(1)


def _mcnemar_p(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact McNemar test of two models' correctness [n] on the same examples: binomial on the discordant pairs."""
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    if only_a + only_b == 0:
        return 1.0
    return float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _distance_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distances [len(a), len(b)] in float64 by matrix products, after centring both on b's mean (less rounding)."""
    centre = b.double().mean(0)
    return torch.cdist(a.double() - centre, b.double() - centre)
