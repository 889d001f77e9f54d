"""The latent-prior seam: what ParameterGenerator asks of the model of its (standardised) latents, and the
registry of the families that provide it.

A family is a class with the constructor `(latent_shape, global_tokens, config, device, seed)` and the methods
of `LatentPrior`, registered under a name with `@register_prior(name)`; train.diffusion.prior picks one by that
name ("auto": the DDPM prior that fits the latents, see `auto_prior`). Its tensors are saved in
diffusion.safetensors under the names its `state_dict` gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor

from ..denoisers import TOKEN_DENOISERS
from ..errors import ConfigError

if TYPE_CHECKING:  # the config module reads this registry, so its classes are only named here
    from ..config import DiffusionConfig


class LatentPrior(Protocol):
    """p(z) over standardised latents z [K, *latent_shape]; `conditioned` priors model p(z | accuracy) too."""

    conditioned: bool  # takes each checkpoint's validation accuracy in fit, and a target accuracy in sample
    metrics: list[dict]  # {"network", "step", "loss"} rows of its training (metrics.csv)

    def fit(self, z: Tensor, condition: Tensor | None = None, progress: bool = True) -> None:
        """Train on latents z [K, *latent_shape] (on the prior's device); condition: their accuracies [K]."""

    def sample(self, n: int, sampler: str, steps: int | None, generator: torch.Generator,
               condition: float | None = None, guidance: float = 0.0, progress: bool = False) -> Tensor:
        """n latents [n, *latent_shape] on the prior's device, its noise from `generator` (a CPU generator: the
        same latents on any device); condition: the accuracy asked for, `guidance` the guidance weight."""

    def state_dict(self) -> dict[str, Tensor]:
        """Every tensor a fitted prior needs, by names unique in diffusion.safetensors."""

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        """Take a fitted prior's tensors back (it may find others among them); RuntimeError if they do not fit."""


class ConditionedPrior(LatentPrior, Protocol):
    """A prior conditioned on validation accuracy also holds the training checkpoints' accuracies."""

    accuracies: Tensor | None  # [K], fractions

    def accuracy_at(self, percentile: float) -> float:
        """The `percentile` (0 to 100) of the training checkpoints' accuracies."""


PriorFamily = Callable[..., LatentPrior]  # (latent_shape, global_tokens, config, device, seed) -> a prior
PRIORS: dict[str, PriorFamily] = {}  # train.diffusion.prior -> family


def register_prior(name: str) -> Callable[[PriorFamily], PriorFamily]:
    """Class decorator: the family is built for train.diffusion.prior=`name`."""

    def register(family: PriorFamily) -> PriorFamily:
        if PRIORS.get(name, family) is not family:
            raise ValueError(f"a latent prior named {name!r} is registered already: {PRIORS[name].__name__}")
        PRIORS[name] = family
        return family

    return register


@register_prior("auto")
def auto_prior(latent_shape: tuple[int, ...], global_tokens: int, config: DiffusionConfig, device: torch.device,
               seed: int) -> LatentPrior:
    """The DDPM prior that fits the latents (train.diffusion.prior=auto, the default): "factorised" with
    train.diffusion.global_steps, "tokens" for a token denoiser, else "flat" (the paper's)."""
    name = "factorised" if config.global_steps else "tokens" if config.arch in TOKEN_DENOISERS else "flat"
    return PRIORS[name](latent_shape, global_tokens, config, device, seed)


def build_prior(latent_shape: tuple[int, ...], global_tokens: int, config: DiffusionConfig,
                device: torch.device, seed: int) -> LatentPrior:
    """The prior train.diffusion.prior names, for latents [*latent_shape] of which the first `global_tokens`
    tokens are a global latent."""
    if config.prior not in PRIORS:
        raise ConfigError(f"train.diffusion.prior={config.prior!r} is not known: choose one of {', '.join(PRIORS)}")
    if config.global_steps and config.prior not in ("auto", "factorised"):
        raise ConfigError(f"train.diffusion.global_steps={config.global_steps} trains the factorised prior's "
                          f"global denoiser, not the {config.prior} prior's: set train.diffusion.prior=auto, or "
                          "global_steps: 0")
    return PRIORS[config.prior](latent_shape, global_tokens, config, device, seed)


def strip(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """The tensors whose names start with `prefix`, under the rest of their names (a network's state dict)."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
