"""Memorization against generalization in weight space: how models sit between the training checkpoints and
held-out checkpoints the generator never saw (the memorization ratio and the coverage of the held-out set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .stats import EXAMPLES, blocks, median, percentile_interval, random_stream, resample_counts

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
    model_to_heldout = _distance_matrix(vectors, heldout)  # [M, H]
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


def _subset_coverage(coverers: torch.Tensor, pool: int, size: int) -> torch.Tensor:
    """P(a random `size`-subset of `pool` models holds one of the `coverers` [..., H] that cover each checkpoint).

    1 - C(pool - c, size) / C(pool, size), by log-gamma; 1 where fewer than `size` models do not cover.
    """
    missing = (pool - coverers).clamp(min=0)
    log_none = (torch.lgamma(missing + 1) - torch.lgamma(missing - size + 1).nan_to_num(posinf=0)
                - math.lgamma(pool + 1) + math.lgamma(pool - size + 1))
    return torch.where(missing < size, 1.0, torch.where(coverers > 0, 1 - log_none.exp(), 0.0))


def _distance_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L2 distances [len(a), len(b)] in float64 by matrix products, after centring both on b's mean (less rounding)."""
    centre = b.double().mean(0)
    return torch.cdist(a.double() - centre, b.double() - centre)
