"""Choose a subset of a model's parameters and move it between tensors and flat vectors.

`ParamSpec` names the generated parameters (sorted in the model's own order) and their shapes;
a parameter vector is their concatenation, shape [D]. `Normalizer` standardises each tensor by its
mean and std over the K checkpoints (docs/design.md, "Following the paper").
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .errors import SelectionError

NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class ParamSpec:
    """The generated parameters: their names (model order) and shapes. Vectors are [D] = concat."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @property
    def numels(self) -> list[int]:
        return [math.prod(shape) for shape in self.shapes]

    @property
    def dim(self) -> int:
        return sum(self.numels)

    @classmethod
    def select(cls, model: nn.Module, patterns: str | Sequence[str]) -> ParamSpec:
        """Select parameters whose names match any glob pattern, e.g. "layer4.1.bn*" or "all".

        A pattern without a wildcard that names a module selects all its parameters.
        Special forms: "all" (every parameter), "last_norm:N" (the last N normalization layers) and "adapters"
        (the LoRA adapters of a model wrapped by PEFT, `pdiff.adapters`).
        """
        patterns = [patterns] if isinstance(patterns, str) else list(patterns)
        if not patterns:
            raise SelectionError("no parameter pattern given: pass e.g. 'layer4.1.bn*' or 'last_norm:2'")
        params = dict(model.named_parameters())
        buffers = {name for name, _ in model.named_buffers()}
        chosen: set[str] = set()
        for pattern in patterns:
            if pattern == "all":
                matched = set(params)
            elif pattern.startswith("last_norm:"):
                matched = set(last_norm_layers(model, _parse_count(pattern)).names)
            elif pattern == "adapters":
                matched = set(adapter_names(model))
                if not matched:
                    raise SelectionError(f"'adapters' selects LoRA adapters, which {type(model).__name__} has none "
                                         "of: add them with model.peft (e.g. {target_modules: [qkv], r: 4}), or "
                                         "select parameters by name")
            else:
                matched = {n for n in params if fnmatch.fnmatchcase(n, pattern) or n.startswith(pattern + ".")}
            if not matched:
                hint = "it names a buffer, not a parameter; " if any(
                    fnmatch.fnmatchcase(b, pattern) for b in buffers) else ""
                raise SelectionError(
                    f"pattern {pattern!r} matches no parameter of {type(model).__name__}: {hint}"
                    f"parameter names look like {_examples(params, pattern)}")
            chosen |= matched
        names = [n for n in params if n in chosen]  # the model's own order
        return cls(tuple(names), tuple(tuple(params[n].shape) for n in names))

    def flatten(self, tensors: dict[str, torch.Tensor] | nn.Module) -> torch.Tensor:
        """Concatenate the selected tensors of a state_dict (or module) into a float32 vector [D]."""
        if isinstance(tensors, nn.Module):
            tensors = dict(tensors.named_parameters())
        return torch.cat([tensors[n].detach().reshape(-1).float() for n in self.names])

    def unflatten(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split a vector [D] (or a batch [..., D]) back into named tensors."""
        if vector.shape[-1] != self.dim:
            raise SelectionError(f"vector has {vector.shape[-1]} entries, this spec needs {self.dim}")
        pieces = vector.split(self.numels, dim=-1)
        batch = vector.shape[:-1]
        return {n: p.reshape(*batch, *s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def to_state_dict(self, vector: torch.Tensor, base: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
        """Tensors for `model.load_state_dict`: the subset alone (strict=False), or merged into `base`."""
        subset = {n: t.clone() for n, t in self.unflatten(vector.detach()).items()}
        if base is None:
            return subset
        merged = dict(base)
        for name, tensor in subset.items():
            if name not in base or tuple(base[name].shape) != tuple(tensor.shape):
                found = "lacks it" if name not in base else f"has it as {tuple(base[name].shape)}"
                raise SelectionError(f"the generated {name!r} is {tuple(tensor.shape)} but the base state_dict "
                                     f"{found}: the base is of another model; merge into the model's own weights")
            for alias in self.aliases(base, name):  # tied weights: one tensor under several names
                merged[alias] = tensor.to(base[name].dtype)
        return merged

    @staticmethod
    def aliases(state_dict: dict[str, torch.Tensor], name: str) -> list[str]:
        """`name` and every other entry of `state_dict` that is the same tensor (tied weights, e.g. an input
        embedding shared with the output layer): load_state_dict copies each, so all must get the new value."""
        tensor = state_dict[name]
        return [other for other, t in state_dict.items() if t is tensor or (
            t.device == tensor.device and t.data_ptr() == tensor.data_ptr() and t.shape == tensor.shape
            and t.stride() == tensor.stride() and t.numel() > 0)]

    @torch.no_grad()
    def load_into(self, model: nn.Module, vector: torch.Tensor) -> nn.Module:
        """Copy a vector [D] into the model's selected parameters in place."""
        params = dict(model.named_parameters())
        for name, tensor in self.unflatten(vector).items():
            params[name].copy_(tensor)
        return model

    def check(self, model: nn.Module) -> None:
        """Raise `SelectionError` if the model lacks any selected parameter or its shape differs."""
        params = dict(model.named_parameters())
        for name, shape in zip(self.names, self.shapes, strict=True):
            if name not in params:
                raise SelectionError(f"model {type(model).__name__} has no parameter {name!r}: "
                                     "these parameters were selected from another model")
            if tuple(params[name].shape) != shape:
                raise SelectionError(f"parameter {name!r} has shape {tuple(params[name].shape)} in the model "
                                     f"but {shape} in the spec: it was made for another model")

    def to_dict(self) -> dict:
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @classmethod
    def from_dict(cls, data: dict) -> ParamSpec:
        return cls(tuple(data["names"]), tuple(tuple(s) for s in data["shapes"]))


def last_norm_layers(model: nn.Module, n: int) -> ParamSpec:
    """The affine parameters of the last `n` normalization layers (the paper's default subset, n=2)."""
    norms = [(name, m) for name, m in model.named_modules()
             if isinstance(m, NORM_LAYERS) and any(True for _ in m.parameters(recurse=False))]
    if not norms:
        raise SelectionError(f"last_norm:{n} selects normalization layers, but {type(model).__name__} has none with "
                             "parameters: select parameters by name instead, e.g. collect.subset=['head.*'] or 'all'")
    if n < 1 or n > len(norms):
        raise SelectionError(f"asked for the last {n} normalization layers but {type(model).__name__} has "
                             f"{len(norms)} with parameters: choose 1..{len(norms)} or use name patterns")
    layer_names = [name for name, _ in norms[-n:]]
    return ParamSpec.select(model, [f"{name}.*" for name in layer_names])


def adapter_names(model: nn.Module) -> list[str]:
    """The names of `model`'s adapter parameters (LoRA's A and B, DoRA's magnitudes), in the model's order: those
    of the modules PEFT put in, which list them in `adapter_layer_names`; empty for a model without adapters."""
    prefixes = tuple(f"{name}.{attribute}." for name, module in model.named_modules()
                     for attribute in getattr(module, "adapter_layer_names", ()))
    return [name for name, _ in model.named_parameters() if prefixes and name.startswith(prefixes)]


def _parse_count(pattern: str) -> int:
    try:
        return int(pattern.split(":", 1)[1])
    except ValueError:
        raise SelectionError(f"bad selection {pattern!r}: write last_norm:N with N an integer, e.g. last_norm:2"
                             ) from None


def _examples(params: dict, pattern: str) -> str:
    """The parameter names closest to a failed pattern (or the first and last few)."""
    names = list(params)
    close = difflib.get_close_matches(pattern.replace("*", ""), names, n=4, cutoff=0.4)
    shown = close or (names[:3] + ["..."] + names[-1:] if len(names) > 4 else names)
    return ", ".join(shown)


class Normalizer:
    """Standardisation of parameter vectors by a mean [D] and a std [D] fitted on the K checkpoints.

    `fit` (the paper's setting, and the units of the noise baselines): each tensor gets the mean and std of its
    entries. `fit_deviations` (whole networks): each number's mean over the checkpoints, and per tensor the spread
    of the checkpoints around it, so that what is left is how the checkpoints differ, at unit scale.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean = mean  # [D]: constant within each tensor (fit), or the mean checkpoint (fit_deviations)
        self.std = std  # [D], constant within each tensor

    @classmethod
    def fit(cls, params: torch.Tensor, spec: ParamSpec, eps: float = 1e-8) -> Normalizer:
        """params [K, D] -> per-tensor statistics expanded to [D]."""
        means, stds = [], []
        for piece, numel in zip(params.split(spec.numels, dim=1), spec.numels, strict=True):
            std = piece.std() if piece.numel() > 1 else torch.zeros(())
            means.append(piece.mean().expand(numel))
            stds.append(torch.clamp(std, min=eps).expand(numel))
        return cls(torch.cat(means), torch.cat(stds))

    @classmethod
    def fit_deviations(cls, params: torch.Tensor, spec: ParamSpec, eps: float = 1e-8) -> Normalizer:
        """params [K, D] -> the mean checkpoint [D] and, per tensor, the root mean square of the checkpoints'
        deviations from it, expanded to [D].

        Why: checkpoints of one training run differ by about a tenth of a tensor's spread of values (mnist-mlp-full:
        a variance of 0.01 in `fit`'s units). An autoencoder trained with MSE in those units reaches a small loss by
        decoding every checkpoint to their mean, and the generator then makes only the weight average. Here the
        differences are all there is to code, at unit scale.
        """
        mean = params.mean(0)  # [D]
        stds = [torch.clamp(piece.pow(2).mean().sqrt(), min=eps).expand(numel)
                for piece, numel in zip((params - mean).split(spec.numels, dim=1), spec.numels, strict=True)]
        return cls(mean, torch.cat(stds))

    def normalize(self, params: torch.Tensor) -> torch.Tensor:
        return (params - self.mean.to(params)) / self.std.to(params)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z) + self.mean.to(z)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"normalizer.mean": self.mean, "normalizer.std": self.std}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> Normalizer:
        return cls(tensors["normalizer.mean"], tensors["normalizer.std"])


class TokenLayout:
    """Cuts vectors [..., D] into T tokens of `size` numbers along tensor boundaries, and joins them back.

    Each tensor (of `numels[i]` numbers) is zero-padded to whole tokens, so no token mixes two tensors and a
    token's position is its (tensor index, offset). `mask` [T, size] marks the real numbers; `join` reads
    only those, so whatever sits in the padding never reaches the parameters (nor a loss on them).
    """

    def __init__(self, numels: Sequence[int], size: int):
        if size < 1:
            raise ValueError(f"token size must be positive, got {size}")
        self.numels, self.size = tuple(numels), size
        counts = [-(-n // size) for n in self.numels]  # tokens per tensor
        self.num_tokens = sum(counts)
        # Built from Python lists on the CPU, so that a dry-run build on the meta device still gets a real layout.
        self.tensor_index = torch.tensor([i for i, c in enumerate(counts) for _ in range(c)], device="cpu")  # [T]
        self.offset = torch.tensor([j for c in counts for j in range(c)], device="cpu")  # [T], index in its tensor
        self.longest = max(counts)  # tokens of the longest tensor
        starts = [sum(counts[:i]) for i in range(len(counts))]  # first token of each tensor
        # index[j]: where number j of the vector sits in the padded token sequence, flattened to [T * size]
        self.index = torch.tensor([start * size + k for start, n in zip(starts, self.numels, strict=True)
                                   for k in range(n)], device="cpu")
        mask = torch.zeros(self.num_tokens * size, dtype=torch.bool, device="cpu")
        mask[self.index] = True
        self.mask = mask.view(self.num_tokens, size)  # [T, size]

    @property
    def dim(self) -> int:
        return sum(self.numels)

    def cut(self, vector: torch.Tensor) -> torch.Tensor:
        """[..., D] -> tokens [..., T, size], zeros in the padding."""
        flat = vector.new_zeros(*vector.shape[:-1], self.num_tokens * self.size)
        flat[..., self.index.to(vector.device)] = vector
        return flat.view(*vector.shape[:-1], self.num_tokens, self.size)

    def join(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [..., T, size] -> [..., D], the padding dropped."""
        return tokens.flatten(-2).index_select(-1, self.index.to(tokens.device))
