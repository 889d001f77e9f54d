"""Predictions and accuracy of many parameter vectors for one model, computed together.

The generated subset is swapped in functionally (`torch.func.functional_call`) and `vmap` runs a
chunk of parameter vectors over each test batch at once, so 200 models cost a few passes, not 200.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.func import functional_call, vmap

from .params import ParamSpec

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def predict(model: nn.Module, loader: Batches, device: torch.device | str = "cpu") -> torch.Tensor:
    """Predicted classes [n] of one model in eval mode."""
    model.eval().to(device)
    return torch.cat([model(x.to(device)).argmax(-1).cpu() for x, _ in loader])


@torch.no_grad()
def predict_many(model: nn.Module, spec: ParamSpec, vectors: torch.Tensor, loader: Batches,
                 chunk: int = 50, device: torch.device | str = "cpu") -> torch.Tensor:
    """Predicted classes [M, n] of the model with each of `vectors` [M, D] loaded into `spec`'s subset."""
    spec.check(model)
    model.eval().to(device)
    fixed = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    for name in spec.names:
        del fixed[name]

    def logits(subset: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(model, {**fixed, **subset}, (x,))

    batched = vmap(logits, in_dims=(0, None))
    batches = [x.to(device) for x, _ in loader]
    rows = []
    for start in range(0, len(vectors), chunk):
        subset = spec.unflatten(vectors[start:start + chunk].to(device))  # name -> [m, *shape]
        rows.append(torch.cat([batched(subset, x).argmax(-1) for x in batches], dim=1).cpu())  # [m, n]
    return torch.cat(rows) if rows else torch.empty(0, 0, dtype=torch.int64)


def labels_of(loader: Batches) -> torch.Tensor:
    return torch.cat([y for _, y in loader])


def accuracy(predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction correct per row: predictions [M, n] (or [n]), labels [n] -> [M] (or [])."""
    return (predictions == labels).float().mean(-1)
