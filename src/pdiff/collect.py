"""Train a base model, then keep training only the chosen subset and save K checkpoints of it.

Two recipes from the official code (DESIGN.md section 4): "epoch" (v1) trains the subset with SGD at
a small lr and saves once per epoch; "iteration" (v2) trains it with AdamW at a constant lr and saves
after every step. Everything else stays frozen and the model stays in eval mode, so BatchNorm running
statistics remain those of the base model.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .params import ParamSpec
from .store import ArtifactError, load_tensors, save_tensors

log = logging.getLogger(__name__)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
RECIPES = ("epoch", "iteration")


class TrainingError(RuntimeError):
    """Training diverged (a non-finite loss) or cannot start."""


@dataclass
class CheckpointSet:
    """K checkpoints of a parameter subset: params [K, D] and, once evaluated, accuracies [K]."""

    params: torch.Tensor
    spec: ParamSpec
    val_accuracy: torch.Tensor | None = None
    test_accuracy: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.params)

    def save(self, path: str | Path, metadata: dict | None = None) -> None:
        tensors = {"params": self.params}
        if self.val_accuracy is not None:
            tensors["val_accuracy"] = self.val_accuracy
        if self.test_accuracy is not None:
            tensors["test_accuracy"] = self.test_accuracy
        save_tensors(path, tensors, {**(metadata or {}), "spec": self.spec.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> tuple[CheckpointSet, dict]:
        tensors, metadata = load_tensors(path)
        if "params" not in tensors or "spec" not in metadata:
            raise ArtifactError(f"{path} holds no checkpoint set (no 'params' or spec): rerun `pdiff collect`")
        spec = ParamSpec.from_dict(metadata["spec"])
        if tensors["params"].shape[1] != spec.dim:
            raise ArtifactError(f"{path}: params have {tensors['params'].shape[1]} columns but the spec needs "
                                f"{spec.dim}; the file was edited or is corrupt: rerun `pdiff collect`")
        if not torch.isfinite(tensors["params"]).all():
            raise ArtifactError(f"{path} contains NaN or Inf parameters: rerun `pdiff collect --force`")
        ckpts = cls(tensors["params"], spec, tensors.get("val_accuracy"), tensors.get("test_accuracy"))
        return ckpts, metadata


def train_base(model: nn.Module, loader: Batches, epochs: int, lr: float = 0.1, momentum: float = 0.9,
               weight_decay: float = 5e-4, device: torch.device | str = "cpu", progress: bool = True) -> nn.Module:
    """Train every parameter with SGD and a cosine lr decay (the paper's base recipe).

    Under a multi-process launch each process trains a DDP copy on its share of `loader`'s batches.
    """
    accelerator = distributed.accelerator()
    loader = distributed.shard(loader)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    for epoch in tqdm(range(epochs), desc="train base", disable=not (progress and distributed.is_main_process())):
        for x, y in loader:
            _step(ddp_model, optimizer, x.to(device), y.to(device), f"base training, epoch {epoch}", "lower collect.lr")
            scheduler.step()
    distributed.release(ddp_model)
    distributed.broadcast_buffers(model)  # every process keeps the BatchNorm statistics the main one saves
    return model.eval()


def collect(model: nn.Module, loader: Batches, spec: ParamSpec, k: int = 200, recipe: str = "epoch",
            lr: float = 0.001, weight_decay: float = 5e-4, device: torch.device | str = "cpu",
            progress: bool = True) -> CheckpointSet:
    """Train only `spec`'s parameters of a trained model and save them K times -> CheckpointSet.

    The model's other parameters and buffers are left untouched; its subset ends at the last checkpoint.
    Under a multi-process launch DDP syncs the subset's gradients only (the frozen rest has none), each
    process trains on its share of the batches, and every process holds the same checkpoints.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r}: choose one of {', '.join(RECIPES)}")
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    spec.check(model)
    accelerator = distributed.accelerator()
    loader = distributed.shard(loader)
    model.to(device).eval()  # eval: BatchNorm keeps the base model's running statistics
    params = dict(model.named_parameters())
    was_trainable = {name: p.requires_grad for name, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(name in spec.names)
    subset = [params[name] for name in spec.names]
    if recipe == "epoch":
        optimizer = torch.optim.SGD(subset, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(subset, lr=lr, weight_decay=weight_decay)
    ddp_model, optimizer = accelerator.prepare(model, optimizer)  # DDP wraps what requires grad: the subset

    checkpoints: list[torch.Tensor] = []
    bar = tqdm(total=k, desc=f"collect ({recipe})", disable=not (progress and distributed.is_main_process()))
    try:
        for epoch in range(k if recipe == "epoch" else math.ceil(k / len(loader))):
            for x, y in loader:
                _step(ddp_model, optimizer, x.to(device), y.to(device), f"collection, epoch {epoch}",
                      "lower collect.subset_lr")
                if recipe == "iteration" and len(checkpoints) < k:
                    checkpoints.append(spec.flatten(model).cpu())
                    bar.update()
            if recipe == "epoch":
                checkpoints.append(spec.flatten(model).cpu())
                bar.update()
    finally:
        bar.close()
        distributed.release(ddp_model)
        for name, p in params.items():
            p.requires_grad_(was_trainable[name])
    return CheckpointSet(torch.stack(checkpoints), spec)


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, where: str,
          fix: str) -> None:
    """One cross-entropy step; a non-finite loss stops training with `fix` in the message."""
    loss = F.cross_entropy(model(x), y)
    _check_finite(loss, where, fix)
    optimizer.zero_grad(set_to_none=True)
    distributed.accelerator().backward(loss)
    optimizer.step()


def _check_finite(loss: torch.Tensor, where: str, fix: str) -> None:
    if not distributed.all_finite(loss):
        raise TrainingError(f"loss became {loss.item()} during {where}: {fix}")
