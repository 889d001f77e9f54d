"""Similarity between models by their mistakes: IoU of the sets of test examples each gets wrong.

IoU(W1, W2) = |W1 ∩ W2| / |W1 ∪ W2| (the paper's measure). A generated model that merely copies a
checkpoint has max IoU near 1 to some original; a genuinely new one sits lower. Beside it, the
L2 distance to the nearest checkpoint in standardised parameter space, next to the originals' own spread.
"""

from __future__ import annotations

import torch

# Bytes of one block of rows that `distance_matrix` copies to float64 at a time: whole networks have D ~ 10^6, where
# a float64 copy of every model (~500) would take 4 GB; smaller blocks read the other side's rows more often.
BLOCK_BYTES = 2**28


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
    distances = distance_matrix(vectors, originals)  # [M, K]
    if exclude_self:
        distances.fill_diagonal_(float("inf"))
    values, where = distances.min(1)
    return values.float(), where


def distance_summary(standardised: torch.Tensor, groups: list[str]) -> dict:
    """Per group: each model's L2 distance to its nearest original in standardised units [M, D] (mean, values,
    nearest index among originals); for the originals, the distance to their nearest other original.

    One distance matrix [M, K] of every model to the originals, cut by group, rather than a copy of each group's
    rows [G, D]: at D ~ 10^6 those copies would be gigabytes.
    """
    members = {g: torch.tensor([i for i, x in enumerate(groups) if x == g]) for g in dict.fromkeys(groups)}
    distances = distance_matrix(standardised, rows_of(standardised, members["original"]))  # [M, K]
    summary = {}
    for group, idx in members.items():
        if group == "original" and len(idx) < 2:
            continue
        block = distances[idx]  # [G, K]
        if group == "original":
            block.fill_diagonal_(float("inf"))  # a checkpoint is not its own nearest original
        values, nearest = block.min(1)
        values = values.float()
        summary[group] = {"mean": values.mean().item(), "values": values.tolist(), "nearest": nearest.tolist()}
    return summary


def distance_matrix(a: torch.Tensor, b: torch.Tensor, block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """L2 distances [len(a), len(b)] (float64) between the rows of a [M, D] and b [K, D], by matrix products
    (|x|^2 + |y|^2 - 2 x.y, as cdist computes them) after centring both on b's mean (less rounding), in float64.

    Blocks of rows (`block_bytes` of float64 each) are copied into two buffers, centred and measured in turn, so
    the float64 copies never hold more than two blocks, whatever M and K, and no block allocates memory afresh
    (at D ~ 10^6, fresh pages for every block cost more than the products).
    """
    dim = a.shape[1]
    rows = max(1, block_bytes // (8 * max(1, dim)))
    centre = torch.zeros(dim, dtype=torch.float64)
    for start in range(0, len(b), rows):
        centre += b[start:start + rows].double().sum(0)
    centre /= max(1, len(b))
    left = torch.empty(min(rows, len(a)), dim, dtype=torch.float64)
    right = torch.empty(min(rows, len(b)), dim, dtype=torch.float64)
    distances = torch.empty(len(a), len(b), dtype=torch.float64)
    for i in range(0, len(a), rows):
        x = left[:len(a[i:i + rows])].copy_(a[i:i + rows]).sub_(centre)
        x_norms = torch.linalg.vector_norm(x, dim=1).square_()
        for j in range(0, len(b), rows):
            y = right[:len(b[j:j + rows])].copy_(b[j:j + rows]).sub_(centre)
            squared = x_norms[:, None] + torch.linalg.vector_norm(y, dim=1).square_() - 2 * (x @ y.T)
            distances[i:i + rows, j:j + rows] = squared.clamp_(min=0).sqrt_()
    return distances


def rows_of(matrix: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """matrix[index] for an index [G] of rows; a view where the rows are consecutive (a group's always are in
    results order), so that a group's parameters [G, D] are not copied."""
    if len(index) and torch.equal(index, torch.arange(int(index[0]), int(index[0]) + len(index))):
        return matrix[int(index[0]):int(index[0]) + len(index)]
    return matrix[index]


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
