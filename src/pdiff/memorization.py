"""Memorization against generalization in weight space: how models sit between the training checkpoints and
held-out checkpoints the generator never saw (the memorization ratio and the coverage of the held-out set).

`heldout_test` puts the generated models and the critique's simpler explanations (Zeng et al. 2025: replicas, or
at best interpolations, of the checkpoints), `BASELINES` = averages of k checkpoints, a Gaussian fit and
interpolations between neighbouring checkpoints, through the same test, with groups of equal size. Its record
(results.json["memorization"], docs/memorization.md):

    {"models_per_group": n,            # every group below: the same n models (drawn at random where it had more)
     "heldout_checkpoints": H, "coverage_size": c,   # coverage: that of c models, c = min(n, H - 1)
     "reference": FIGURES,             # the held-out checkpoints themselves, leave-one-out (H models)
     "generated": FIGURES,
     "baselines": {"mean_of_k" | "gaussian" | "interpolation": {**FIGURES, "comparisons": {
         "median_memorization_ratio": COMPARISON, "mean_test_accuracy": COMPARISON}}}}
    FIGURES: models, memorization_ratio_median, distance_to_training_median, distance_to_heldout_median,
             coverage, coverage_ci_low, coverage_ci_high, coverage_size, mean_val_accuracy, mean_test_accuracy
    COMPARISON: a pdiff.stats.Comparison record of generated minus the baseline, with its 95% CI and verdict

Generated models beat a baseline on held-out closeness at equal accuracy when their memorization ratio is higher
(nearer the unseen checkpoints, relative to the seen ones) while their mean test accuracy is non-inferior (CI lower
end above -verdicts.ACCURACY_MARGIN), the place `verdicts.dominance_verdict` calls "generated dominates" with the ratio
as the axis where higher is better; a claim's verdict from these CIs is the claim's rule (bench.claims).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import stats
from .similarity import BLOCK_BYTES, distance_matrix, rows_of
from .stats import EXAMPLES, MODELS, blocks, median, percentile_interval, random_stream, resample_counts

BASELINES = ("mean_of_k", "gaussian", "interpolation")  # the simpler explanations the held-out test is run on
COVERAGE_MARGIN = 0.1  # "closer" in the held-out test: by this many median training nearest-neighbour distances


@dataclass
class Generalization:
    """How a set of models sits between the training checkpoints and held-out checkpoints, in weight space.

    memorization_ratio_median: median over models of (distance to nearest training checkpoint) / (distance to
    nearest held-out one); near 0 for copies of training checkpoints, about 1 for new draws of the same process.
    coverage: expected fraction of held-out checkpoints covered by `coverage_size` of the models (a model covers
    a checkpoint when closer to it than its nearest training checkpoint by `coverage_margin` times the training
    checkpoints' median spacing; see `generalization`), with its 95% bootstrap CI.
    distance_to_training, distance_to_heldout: [M] per model.
    """

    memorization_ratio_median: float
    coverage: float
    coverage_ci_low: float
    coverage_ci_high: float
    distance_to_training: torch.Tensor
    distance_to_heldout: torch.Tensor
    coverage_size: int
    coverage_margin: float

    def as_dict(self) -> dict:
        return {"memorization_ratio_median": self.memorization_ratio_median, "coverage": self.coverage,
                "coverage_ci_low": self.coverage_ci_low, "coverage_ci_high": self.coverage_ci_high,
                "coverage_size": self.coverage_size, "coverage_margin": self.coverage_margin,
                "distance_to_training": self.distance_to_training.tolist(),
                "distance_to_heldout": self.distance_to_heldout.tolist()}


def nearest_distances(vectors: torch.Tensor, references: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """L2 distance [M] (float64) of each of `vectors` [M, D] to its nearest row of `references` [K, D].

    With `exclude_self` (vectors are the references, M = K) a row is not its own neighbour. The nearest row is
    found from the fast matrix-product distances and its distance recomputed directly, so a copy is at 0; that
    recomputation takes `block` rows at a time, so its float64 differences never span all of [M, D].
    """
    if exclude_self and len(vectors) != len(references):
        raise ValueError(f"exclude_self needs vectors to be the references, got {len(vectors)} and {len(references)}")
    distances = distance_matrix(vectors, references)
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    nearest = distances.argmin(1)
    block = max(1, BLOCK_BYTES // (8 * max(1, vectors.shape[1])))
    nearest_distance = torch.empty(len(vectors), dtype=torch.float64)
    for i in range(0, len(vectors), block):
        difference = vectors[i:i + block].double().sub_(references[nearest[i:i + block]])  # float32 widens exactly
        nearest_distance[i:i + block] = difference.norm(dim=1)
    return nearest_distance


def generalization(vectors: torch.Tensor, training: torch.Tensor, heldout: torch.Tensor, n_boot: int = 1000,
                   seed: int = 0, is_heldout: bool = False, size: int | None = None,
                   margin: float = COVERAGE_MARGIN) -> Generalization:
    """Memorization ratio and coverage of models `vectors` [M, D] given `training` [T, D] and `heldout` [H, D].

    All in the same standardised units. Coverage is Naeem et al. (2020)'s idea moved to weight space: a
    held-out checkpoint is covered when some model is closer to it than any training checkpoint is, by more
    than `margin` times the median distance of a training checkpoint to its nearest other one (so a copy of
    a training checkpoint plus a little noise covers nothing). More models cover more, so coverage is that of
    `size` models (default: all): the expected share covered by a random subset of that many, exact from the
    number of models covering each checkpoint; give every compared group the smallest group's size.
    `is_heldout`: vectors ARE the held-out set (the reference figure). Then a held-out checkpoint is not its own
    neighbour (leave-one-out) for either measure. A model that copies a held-out checkpoint has ratio inf.
    The CI resamples the held-out checkpoints and, independently, the models (with `is_heldout` one resample
    serves both, as they are the same checkpoints); training is fixed. Resampled models repeat, and fewer
    distinct models cover less, so the replicates sit below the estimate: the percentile interval is taken of
    the replicates shifted to have the estimate as their mean, and clipped to [0, 1].
    """
    if is_heldout and vectors.shape != heldout.shape:
        raise ValueError(f"is_heldout needs vectors to be the held-out set, got {tuple(vectors.shape)} and "
                         f"{tuple(heldout.shape)}")
    to_training = nearest_distances(vectors, training)
    to_heldout = nearest_distances(vectors, heldout, exclude_self=is_heldout)
    heldout_to_training = nearest_distances(heldout, training)  # [H]
    spacing = float(median(nearest_distances(training, training, exclude_self=True))) if len(training) > 1 else 0.0
    model_to_heldout = distance_matrix(vectors, heldout)  # [M, H]
    if is_heldout:
        model_to_heldout.fill_diagonal_(float("inf"))
    # [M, H]: model i covers held-out h; a tie is not closer (relative 1e-9, above rounding)
    covers = (model_to_heldout < (heldout_to_training - margin * spacing) * (1 - 1e-9)).double()
    pool = len(vectors) - int(is_heldout)  # the models that may cover a held-out checkpoint
    size = pool if size is None else min(size, pool)
    if size < 1:
        raise ValueError(f"coverage needs at least one model, got {pool} (size {size})")
    coverage = _subset_coverage(covers.sum(0, keepdim=True), pool, size).mean().item()
    generator = random_stream(seed, EXAMPLES)
    replicates = []
    for b in blocks(n_boot):
        heldout_counts = resample_counts(len(heldout), b, generator)  # [b, H]
        model_counts = heldout_counts if is_heldout else resample_counts(len(vectors), b, generator)
        covered = _subset_coverage(model_counts.double() @ covers, pool, size)  # [b, H]
        replicates.append((covered * heldout_counts).sum(1) / len(heldout))
    replicates = torch.cat(replicates)
    low, high = percentile_interval(replicates - replicates.mean() + coverage)  # recentred: see the docstring
    return Generalization(float(median(to_training / to_heldout)), coverage, max(low, 0.0), min(high, 1.0),
                          to_training, to_heldout, size, margin)


@dataclass
class Group:
    """One group of models for `heldout_test`: parameters [M, D] (standardised like the checkpoints), test
    correctness [M, n_test] (bool), val accuracies [M], and the generator that drew each model [M] (or None)."""

    vectors: torch.Tensor
    correct: torch.Tensor
    val_accuracy: torch.Tensor
    generators: torch.Tensor | None = None

    def rows(self, index: torch.Tensor) -> Group:
        """The models of `index` [G]; their vectors a view where the rows are consecutive (see rows_of)."""
        return Group(rows_of(self.vectors, index), self.correct[index], self.val_accuracy[index],
                     None if self.generators is None else self.generators[index])


def heldout_test(generated: Group, baselines: dict[str, Group], reference: Group, training: torch.Tensor,
                 seed: int = 0) -> dict:
    """The held-out test of the generated models beside `baselines` (name -> Group), the record of the module
    docstring. `reference` is the held-out checkpoints [H, D] as a group, `training` the checkpoints [T, D] the
    generator learned. Every compared group keeps the same number of models, the smallest group's (a random
    subset of the others, seeded), so that neither a median's CI nor a coverage favours the larger group."""
    heldout = reference.vectors
    if len(heldout) < 2:
        raise ValueError(f"the held-out test needs 2 or more held-out checkpoints (leave-one-out), got {len(heldout)}")
    size = min(len(g.vectors) for g in (generated, *baselines.values()))
    coverage_size = min(size, len(heldout) - 1)
    generator = random_stream(seed, MODELS)

    def equal(group: Group) -> Group:
        return group.rows(torch.randperm(len(group.vectors), generator=generator)[:size].sort().values)

    def figures(group: Group, is_heldout: bool = False) -> tuple[dict, torch.Tensor]:
        g = generalization(group.vectors, training, heldout, seed=seed, is_heldout=is_heldout, size=coverage_size)
        ratio = g.distance_to_training / g.distance_to_heldout  # [M]
        return {"models": len(group.vectors), "memorization_ratio_median": g.memorization_ratio_median,
                "distance_to_training_median": float(median(g.distance_to_training)),
                "distance_to_heldout_median": float(median(g.distance_to_heldout)), "coverage": g.coverage,
                "coverage_ci_low": g.coverage_ci_low, "coverage_ci_high": g.coverage_ci_high,
                "coverage_size": g.coverage_size, "mean_val_accuracy": group.val_accuracy.float().mean().item(),
                "mean_test_accuracy": group.correct.float().mean().item()}, ratio

    generated = equal(generated)
    generated_figures, generated_ratio = figures(generated)
    record = {"models_per_group": size, "heldout_checkpoints": len(heldout), "coverage_size": coverage_size,
              "reference": figures(reference, is_heldout=True)[0], "generated": generated_figures, "baselines": {}}
    for name, group in baselines.items():
        group = equal(group)
        baseline_figures, ratio = figures(group)
        accuracy = stats.compare_accuracy(generated.correct, generated.val_accuracy, group.correct,
                                          group.val_accuracy, "generated", name, generators=generated.generators)[0]
        closeness = stats.compare_values(generated_ratio, ratio, "generated", name, "median_memorization_ratio",
                                         seed=seed, generators=generated.generators)
        record["baselines"][name] = {**baseline_figures, "comparisons": {
            "median_memorization_ratio": closeness.as_dict(), "mean_test_accuracy": accuracy.as_dict()}}
    return record


def _subset_coverage(coverers: torch.Tensor, pool: int, size: int) -> torch.Tensor:
    """P(a random `size`-subset of `pool` models holds one of the `coverers` [..., H] that cover each checkpoint).

    1 - C(pool - c, size) / C(pool, size), by log-gamma; 1 where fewer than `size` models do not cover.
    """
    missing = (pool - coverers).clamp(min=0)
    log_none = (torch.lgamma(missing + 1) - torch.lgamma(missing - size + 1).nan_to_num(posinf=0)
                - math.lgamma(pool + 1) + math.lgamma(pool - size + 1))
    return torch.where(missing < size, 1.0, torch.where(coverers > 0, 1 - log_none.exp(), 0.0))

