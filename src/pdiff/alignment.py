"""Alignment: independently trained networks re-expressed in one basis without changing what they compute.

A network's hidden units can be permuted, each layer's outputs with the next layer's inputs, and it computes
the same function: two runs from different seeds may have learned the same features in another order, so their
weight vectors lie far apart although the networks agree. Weight matching (Ainsworth et al. 2023, "Git
Re-Basin", Alg. 1) finds, for each permutation group, the permutation of one network's units that best matches
the other's weights: it solves one linear assignment per group (`scipy.optimize.linear_sum_assignment`), the
others held fixed, and goes round the groups until none changes.

A permutation group is one layer's units: the (tensor name, axis) pairs that a permutation of them acts on (the
output axis of a linear / conv layer, its norm layer's parameters and running statistics, the next layer's input
axis; in a ResNet every block that adds to the same residual stream shares its group). `permutation_groups`
declares them for the built-in models and refuses any other in one line.

`fold_batchnorm` moves a BatchNorm layer's running statistics into its affine parameters (eval mode computes
the same), so that networks trained apart share one base model's buffers and their parameter vectors alone say
what they compute.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from .errors import ConfigError
from .tasks.models import MLP, CifarResNet18, ConvNet1d, ConvNet3


@dataclass(frozen=True)
class PermutationGroups:
    """sizes: group -> its number of units; axes: state_dict name -> the group of each axis (None: not
    permuted). An axis longer than its group (a linear head over flattened conv features [c * l]) is permuted in
    blocks of length / units, as the flattening lays it out."""

    sizes: dict[str, int]
    axes: dict[str, tuple[str | None, ...]]

    def permute(self, state: dict[str, Tensor], perms: dict[str, Tensor]) -> dict[str, Tensor]:
        """`state` with every named tensor's axes permuted by perms (group -> index [n]: unit i of the result is
        unit perms[g][i] of `state`); tensors not in `axes` (and absent names) are left as they are."""
        out = dict(state)
        for name, groups in self.axes.items():
            if name in state:
                out[name] = self._permuted(state[name], groups, perms)
        return out

    def _permuted(self, t: Tensor, groups: tuple[str | None, ...], perms: dict[str, Tensor],
                  skip: int | None = None) -> Tensor:
        for axis, group in enumerate(groups):
            if group is not None and axis != skip:
                n = self.sizes[group]
                t = t.unflatten(axis, (n, t.shape[axis] // n)).index_select(axis, perms[group]).flatten(axis, axis + 1)
        return t

    def match(self, reference: dict[str, Tensor], other: dict[str, Tensor], max_rounds: int = 100,
              seed: int = 0) -> dict[str, Tensor]:
        """The permutations (group -> index [n]) that bring `other` closest to `reference` by weight matching,
        compared on the names the two dicts share (pass parameters only: running statistics are permuted
        alike but do not say which units correspond)."""
        names = [name for name in self.axes if name in reference and name in other]
        perms = {g: torch.arange(n) for g, n in self.sizes.items()}
        order = np.random.default_rng(seed).permutation(list(self.sizes))
        for _ in range(max_rounds):
            changed = False
            for group in order:
                n = self.sizes[group]
                similarity = torch.zeros(n, n, dtype=torch.float64)  # [n, n]: reference unit i . other unit j
                for name in names:
                    for axis, g in enumerate(self.axes[name]):
                        if g != group:
                            continue
                        a = _units_first(reference[name].double(), axis, n)  # [n, rest]
                        b = _units_first(self._permuted(other[name].double(), self.axes[name], perms, skip=axis),
                                         axis, n)
                        similarity += a @ b.T
                _, best = linear_sum_assignment(similarity.numpy(), maximize=True)
                best = torch.as_tensor(best)
                old = similarity[torch.arange(n), perms[group]].sum()
                if similarity[torch.arange(n), best].sum() > old + 1e-12:
                    perms[group], changed = best, True
            if not changed:
                break
        return perms


def _units_first(t: Tensor, axis: int, n: int) -> Tensor:
    """t with `axis` (n units, each a block of length / n) first and the rest flattened: [n, rest]."""
    return t.unflatten(axis, (n, t.shape[axis] // n)).movedim(axis, 0).reshape(n, -1)


# ---- the built-in models' groups ---------------------------------------------------------------------------
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)  # the layers whose output units a group permutes
NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)  # the layers that follow their units
def _norm_axes(prefix: str, norm: nn.Module, group: str | None) -> dict[str, tuple[str | None, ...]]:
    names = ("weight", "bias", "running_mean", "running_var")
    return {f"{prefix}.{n}": (group,) for n in names if getattr(norm, n, None) is not None}


def chain_groups(model: nn.Module) -> PermutationGroups:
    """A plain chain (MLP, ConvNet1d, ConvNet3): its linear / conv layers in execution order, each but the last
    opening a group of its output units, which its norm layer and the next layer's input share."""
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, LAYERS + NORMS)]
    last = max(i for i, (_, m) in enumerate(layers) if isinstance(m, LAYERS))
    sizes, axes, group = {}, {}, None
    for i, (name, m) in enumerate(layers):
        if isinstance(m, LAYERS):
            out = None if i == last else f"{name}.out"
            if out is not None:
                sizes[out] = m.weight.shape[0]
            axes[f"{name}.weight"] = (out, group) + (None,) * (m.weight.dim() - 2)
            if m.bias is not None:
                axes[f"{name}.bias"] = (out,)
            group = out
        else:
            axes.update(_norm_axes(name, m, group))
    return PermutationGroups(sizes, axes)


def resnet_groups(model: CifarResNet18) -> PermutationGroups:
    """CifarResNet18: one group per residual stream (the stem and every block adding to it; a block with a 1x1
    shortcut starts a new stream) and one per block's inner units (conv1 / bn1 out, conv2 in)."""
    stream = "stream0"
    sizes = {stream: model.conv1.out_channels}
    axes = {"conv1.weight": (stream, None, None, None), **_norm_axes("bn1", model.bn1, stream)}
    for s, stage in enumerate((model.layer1, model.layer2, model.layer3, model.layer4), start=1):
        for b, block in enumerate(stage):
            prefix, inner = f"layer{s}.{b}", f"layer{s}.{b}.inner"
            out = stream
            if len(block.shortcut):
                out = f"stream{s}"
                sizes[out] = block.conv2.out_channels
                axes[f"{prefix}.shortcut.0.weight"] = (out, stream, None, None)
                axes.update(_norm_axes(f"{prefix}.shortcut.1", block.shortcut[1], out))
            sizes[inner] = block.conv1.out_channels
            axes[f"{prefix}.conv1.weight"] = (inner, stream, None, None)
            axes.update(_norm_axes(f"{prefix}.bn1", block.bn1, inner))
            axes[f"{prefix}.conv2.weight"] = (out, inner, None, None)
            axes.update(_norm_axes(f"{prefix}.bn2", block.bn2, out))
            stream = out
    axes["fc.weight"], axes["fc.bias"] = (None, stream), (None,)
    return PermutationGroups(sizes, axes)


# model class -> its groups; the timm models are not declared
PERMUTATION_GROUPS: dict[type, Callable[[nn.Module], PermutationGroups]] = {
    MLP: chain_groups, ConvNet1d: chain_groups, ConvNet3: chain_groups, CifarResNet18: resnet_groups}


def permutation_groups(model: nn.Module) -> PermutationGroups:
    """The permutation groups of a built-in model; a ConfigError for any other."""
    if type(model) not in PERMUTATION_GROUPS:
        raise ConfigError(f"collect.align=weights knows the permutation groups of mlp, convnet1d, convnet3 and "
                          f"cifar_resnet18, not of {type(model).__name__}: set collect.align=none")
    return PERMUTATION_GROUPS[type(model)](model)


# ---- whole collections -------------------------------------------------------------------------------------
@torch.no_grad()
def fold_batchnorm(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """`state` (a state_dict of `model`) with each BatchNorm's running statistics folded into its affine
    parameters: w' = w / sqrt(var + eps), b' = b - mean w', running mean 0 and variance 1 - eps, which in eval
    mode compute the same outputs (to float rounding)."""
    out = dict(state)
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine and m.track_running_stats:
            mean, var = state[f"{name}.running_mean"], state[f"{name}.running_var"]
            scale = state[f"{name}.weight"] / (var + m.eps).sqrt()
            out[f"{name}.weight"] = scale
            out[f"{name}.bias"] = state[f"{name}.bias"] - mean * scale
            out[f"{name}.running_mean"] = torch.zeros_like(mean)
            out[f"{name}.running_var"] = torch.full_like(var, 1 - m.eps)
    return out


def align_runs(groups: PermutationGroups, unflatten: Callable[[Tensor], dict[str, Tensor]],
               flatten: Callable[[dict[str, Tensor]], Tensor], params: Tensor, runs: Tensor) -> Tensor:
    """Parameter vectors [K, D] with every run's checkpoints permuted into run 0's basis: one permutation per run,
    matched between the run's mean checkpoint and run 0's, so each trajectory stays whole. runs [K] holds each
    row's run; unflatten / flatten turn a vector [D] into named tensors and back."""
    reference = unflatten(params[runs == 0].mean(0))
    aligned = params.clone()
    for r in runs.unique().tolist():
        if r == 0:
            continue
        rows = (runs == r).nonzero().squeeze(1)
        perms = groups.match(reference, unflatten(params[rows].mean(0)), seed=r)
        for i in rows.tolist():
            aligned[i] = flatten(groups.permute(unflatten(params[i]), perms))
    return aligned


def distance_across_runs(params: Tensor, runs: Tensor) -> float:
    """The mean L2 distance between checkpoints [K, D] of different runs (runs [K])."""
    distances = torch.cdist(params.double(), params.double())  # [K, K]
    other = runs[:, None] != runs[None, :]
    return distances[other].mean().item()
