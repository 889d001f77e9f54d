"""Reference parameter vectors to compare generated models against (docs/design.md, "Following the paper").

Each baseline answers "could something simpler than diffusion make these models?": the average of
all checkpoints (the paper's "ensemble"), checkpoints plus noise, checkpoints trained a few steps
further, means of k random checkpoints (Zeng et al. 2025), a per-coordinate Gaussian fit, and points on the
trajectory between neighbouring checkpoints (the critique's "simple interpolations").
Every function returns vectors [n, D] over the same parameter subset as the checkpoints [K, D].
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .params import Normalizer, ParamSpec

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def weight_average(params: torch.Tensor) -> torch.Tensor:
    """The uniform average of all checkpoints [K, D] -> [1, D] (the paper's "ensemble")."""
    return params.mean(0, keepdim=True)


def pick_checkpoints(k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """Indices [n] of the checkpoints to start n models from: each once in random order, then again."""
    return torch.cat([torch.randperm(k, generator=generator) for _ in range(-(-n // k))])[:n]


def noise_added(params: torch.Tensor, normalizer: Normalizer, strength: float, n: int,
                generator: torch.Generator) -> torch.Tensor:
    """n checkpoints plus Gaussian noise of std `strength` in per-tensor standardised units -> [n, D]."""
    start = params[pick_checkpoints(len(params), n, generator)]  # [n, D]
    noise = torch.randn(start.shape, generator=generator)
    return normalizer.denormalize(normalizer.normalize(start) + strength * noise)


def mean_of_k(params: torch.Tensor, k: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """n averages, each of k distinct checkpoints chosen at random -> [n, D] (k = 16 in Zeng et al.)."""
    if not 1 <= k <= len(params):
        raise ValueError(f"k={k} must be between 1 and the {len(params)} checkpoints")
    chosen = torch.stack([torch.randperm(len(params), generator=generator)[:k] for _ in range(n)])  # [n, k]
    return params[chosen].mean(1)


def gaussian_fit(params: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n samples of N(mean, std^2) fitted to each coordinate of the checkpoints [K, D] -> [n, D]."""
    mean, std = params.mean(0), params.std(0) if len(params) > 1 else torch.zeros(params.shape[1])
    return mean + std * torch.randn(n, params.shape[1], generator=generator)


def interpolation(params: torch.Tensor, n: int, generator: torch.Generator,
                  runs: torch.Tensor | None = None) -> torch.Tensor:
    """n random convex combinations (1 - t) p_i + t p_{i+1}, t ~ U(0, 1), of checkpoints that are neighbours along
    a trajectory (params [K, D] in collection order; the pair i chosen uniformly) -> [n, D]. runs [K]: the training
    run of each checkpoint (collect.runs), so that a pair never joins the end of one run to the start of the next
    (unaligned runs' weights do not even share a basis). With one checkpoint, every combination is that checkpoint."""
    k = len(params)
    same_run = torch.ones(max(k - 1, 0), dtype=torch.bool) if runs is None else runs[1:] == runs[:-1]
    pairs = same_run.nonzero().squeeze(1)  # [P]: the i whose (i, i + 1) lie along one trajectory
    if len(pairs) == 0:  # one checkpoint per run (or one in all): each combination is a checkpoint itself
        first = torch.randint(k, (n,), generator=generator)
        return params[first].clone()
    first = pairs[torch.randint(len(pairs), (n,), generator=generator)]  # [n]
    t = torch.rand(n, 1, generator=generator)
    return params[first] + t * (params[first + 1] - params[first])  # = (1 - t) p_i + t p_{i+1}


def fine_tuned(model: nn.Module, spec: ParamSpec, params: torch.Tensor, loader: Batches, steps: int,
               lr: float, n: int, generator: torch.Generator, optimizer: str = "adamw", weight_decay: float = 5e-4,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """n checkpoints each trained `steps` more steps on the subset alone (the paper's "fine-tuned") -> [n, D].

    As in collection, the model stays in eval mode (BatchNorm keeps its running statistics), only the subset
    trains, and `optimizer` is the collection recipe's: "adamw" (iteration) or "sgd" with momentum 0.9
    (epoch). `model` itself is left untouched. Successive models see successive batches of `loader`.
    """
    if optimizer not in ("adamw", "sgd"):
        raise ValueError(f"optimizer={optimizer!r}: choose adamw or sgd")
    spec.check(model)
    model = copy.deepcopy(model).to(device).eval()
    for name, p in model.named_parameters():
        p.requires_grad_(name in spec.names)
    subset = [dict(model.named_parameters())[name] for name in spec.names]
    batches = _endless(loader)
    tuned = []
    for i in pick_checkpoints(len(params), n, generator).tolist():
        spec.load_into(model, params[i].to(device))
        if optimizer == "adamw":
            opt = torch.optim.AdamW(subset, lr=lr, weight_decay=weight_decay)
        else:
            opt = torch.optim.SGD(subset, lr=lr, momentum=0.9, weight_decay=weight_decay)
        for _ in range(steps):
            x, y = next(batches)
            loss = F.cross_entropy(model(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        tuned.append(spec.flatten(model).cpu())
    return torch.stack(tuned) if tuned else torch.empty(0, spec.dim)


def _endless(loader: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader
