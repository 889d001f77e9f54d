"""Similarity between models by their mistakes: IoU of the sets of test examples each gets wrong.

IoU(W1, W2) = |W1 ∩ W2| / |W1 ∪ W2| (the paper's measure). A generated model that merely copies a
checkpoint has max IoU near 1 to some original; a genuinely new one sits lower. Beside it, the
L2 distance to the nearest checkpoint in standardised parameter space, next to the originals' own spread.
"""

from __future__ import annotations

import torch


def iou_matrix(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Wrong-prediction IoU between every pair of models: predictions [M, n], labels [n] -> [M, M].

    Two models that make no mistake at all are identical on the test set: their IoU is 1.
    """
    wrong = predictions != labels  # [M, n]
    return wrong_iou(wrong, wrong)


def wrong_iou(wrong: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """IoU [M, R] of the wrong sets wrong [M, n] and references [R, n] (bool); two empty sets have IoU 1."""
    a, b = wrong.float(), references.float()
    intersection = a @ b.T  # [M, R]
    union = a.sum(1, keepdim=True) + b.sum(1) - intersection
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.ones_like(union))


def max_iou_to(wrong: torch.Tensor, references: torch.Tensor, exclude_self: bool = False) -> torch.Tensor:
    """Each model's max wrong-prediction IoU to any of `references`: wrong [M, n], references [R, n] bool -> [M].

    With `exclude_self` (the models are the references) a model is not compared with itself.
    """
    iou = wrong_iou(wrong, references)
    if exclude_self:
        iou.fill_diagonal_(-1.0)
    return iou.max(1).values


def max_similarity(iou: torch.Tensor, rows: torch.Tensor, references: torch.Tensor,
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """For each model in `rows`, its max IoU to any model in `references` (never itself) and which one."""
    block = iou[rows][:, references].clone()  # [len(rows), len(references)]
    block[rows[:, None] == references[None, :]] = -1.0  # a model is not its own nearest neighbour
    values, where = block.max(1)
    return values, references[where]


def mean_pairwise(iou: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean IoU over pairs (i in a, j in b), i != j."""
    block = iou[a][:, b]
    distinct = a[:, None] != b[None, :]
    return block[distinct].mean().item() if distinct.any() else float("nan")


def nearest_checkpoint(vectors: torch.Tensor, originals: torch.Tensor, exclude_self: bool = False,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 distance of each of `vectors` [M, D] to its nearest row of `originals` [K, D], and which row.

    With `exclude_self` (vectors are the originals themselves, M = K) a row is not its own neighbour,
    which gives the spread among the originals.
    """
    distances = torch.cdist(vectors.double(), originals.double())  # [M, K]
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    values, where = distances.min(1)
    return values.float(), where


def distance_summary(standardised: torch.Tensor, groups: list[str]) -> dict:
    """Per group: each model's L2 distance to its nearest original in standardised units [M, D] (mean, values,
    nearest index among originals); for the originals, the distance to their nearest other original."""
    originals = standardised[[g == "original" for g in groups]]
    summary = {}
    for group in dict.fromkeys(groups):
        rows = standardised[[g == group for g in groups]]
        if group == "original" and len(rows) < 2:
            continue
        values, nearest = nearest_checkpoint(rows, originals, exclude_self=group == "original")
        summary[group] = {"mean": values.mean().item(), "values": values.tolist(), "nearest": nearest.tolist()}
    return summary


def similarity_summary(predictions: torch.Tensor, labels: torch.Tensor, groups: list[str],
                       standardised: torch.Tensor | None = None) -> dict:
    """Mean IoU within and between groups, and every non-original model's max IoU to the originals.

    Given the models' parameter vectors in standardised units [M, D], also their nearest-checkpoint
    distances ("distance_to_original", see `distance_summary`).
    """
    iou = iou_matrix(predictions, labels)
    members = {g: torch.tensor([i for i, x in enumerate(groups) if x == g]) for g in dict.fromkeys(groups)}
    originals = members["original"]
    summary: dict = {"mean_iou": {}, "max_iou_to_original": {}}
    if standardised is not None:
        summary["distance_to_original"] = distance_summary(standardised, groups)
    for group, idx in members.items():
        if len(idx) > 1:
            summary["mean_iou"][f"{group}-{group}"] = mean_pairwise(iou, idx, idx)
        if group != "original":
            summary["mean_iou"][f"original-{group}"] = mean_pairwise(iou, originals, idx)
        if len(originals) > 1 or group != "original":
            values, nearest = max_similarity(iou, idx, originals)
            summary["max_iou_to_original"][group] = {
                "mean": values.mean().item(), "values": values.tolist(),
                "nearest": torch.searchsorted(originals, nearest).tolist()}  # index among originals
    return summary
