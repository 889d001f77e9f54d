"""The factorised prior p(global) p(rest | global) of token latents with a global latent: a flat DDPM of its
own over the G global tokens, and the transformer over the other tokens given them.

Why a denoiser of its own: drawn by the transformer among T other tokens, mnist-mlp-full's 16 global
coordinates strayed off the checkpoints' trajectory along directions of little variance, and 28 of 100 models
landed above the best checkpoint; a flat MLP over just them, many cheap steps (train.diffusion.global_steps),
keeps them on it. The global latent is always drawn by the full DDPM chain: a flat network of G * c numbers,
its 1000 steps for 100 models take seconds; `sampler` and `steps` draw the other tokens.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..denoisers import build_denoiser
from ..diffusion import clean_prefix_loss, denoising_loss, sample
from ..errors import ConfigError
from ..fitting import fit_averaged
from .base import register_prior, strip
from .tokens import TokenPrior

if TYPE_CHECKING:
    from ..config import DiffusionConfig


class TokensGivenGlobal(TokenPrior):
    """The token prior of the tokens after the global ones, which it is given clean: p(rest | global)."""

    def loss(self, net: nn.Module, batch: Tensor, noise: torch.Generator, token_ids: Tensor | None) -> Tensor:
        """The loss of a batch [b, G + n, c] with its G global tokens clean and unscored."""
        denoiser = net if token_ids is None else partial(net, token_ids=token_ids)
        return clean_prefix_loss(self.schedule, denoiser, batch, self.global_tokens, noise)

    def sample_given(self, prefix: Tensor, sampler: str, steps: int | None, generator: torch.Generator,
                     progress: bool = False) -> Tensor:
        """Latents [n, G + T, c] whose global tokens are prefix [n, G, c] and the rest drawn given them."""
        return sample(self.denoiser, self.schedule, len(prefix), self.latent_shape, sampler, steps, generator,
                      self.device, progress, prefix=prefix)


@register_prior("factorised")
class FactorisedPrior:
    """The global denoiser (an MLP over [G * c]) and the transformer of the rest given the global latent."""

    conditioned = False

    def __init__(self, latent_shape: tuple[int, ...], global_tokens: int, config: DiffusionConfig,
                 device: torch.device, seed: int):
        if not global_tokens:
            raise ConfigError(f"train.diffusion.global_steps={config.global_steps} trains a denoiser for the global "
                              "latent, which this autoencoder lacks: give the tokens autoencoder a global_dim, or "
                              "set global_steps: 0")
        if not config.global_steps:
            raise ConfigError("train.diffusion.prior=factorised trains its global denoiser for train.diffusion."
                              "global_steps steps: set global_steps above 0, or prior: auto")
        self.rest = TokensGivenGlobal(latent_shape, global_tokens, config, device, seed)  # built first: its init
        self.global_denoiser = build_denoiser("mlp", global_tokens * latent_shape[-1]).to(device)
        self.latent_shape, self.global_tokens = latent_shape, global_tokens
        self.config, self.device, self.seed, self.schedule = config, device, seed, self.rest.schedule
        self.global_metrics: list[dict] = []

    @property
    def metrics(self) -> list[dict]:
        return self.global_metrics + self.rest.metrics

    def global_latents(self, z: Tensor) -> Tensor:
        """The global latent of standardised latents z [N, G + T, c], flat: [N, G * c]."""
        return z[:, :self.global_tokens].flatten(1)

    def fit(self, z: Tensor, condition: Tensor | None = None, progress: bool = True) -> None:
        """Train the global denoiser on the global latents of z [K, G + T, c], then the transformer on z given
        them."""
        self._fit_global(self.global_latents(z), self.config.global_steps, progress)
        self.rest.fit(z, progress=progress)

    def retrain_global(self, z_global: Tensor, steps: int, progress: bool = False) -> None:
        """A fresh global denoiser (initialised from torch's global generator) trained `steps` steps on global
        latents z_global [K, G * c]; the transformer stays (bench.global_steps: how many steps it needs)."""
        self.global_denoiser = build_denoiser("mlp", z_global.shape[1]).to(self.device)
        self._fit_global(z_global.to(self.device), steps, progress)

    def _fit_global(self, z_global: Tensor, steps: int, progress: bool) -> None:
        def loss_fn(net: nn.Module, batch: Tensor, noise: torch.Generator, token_ids: Tensor | None) -> Tensor:
            return denoising_loss(self.schedule, net, batch, noise)

        self.global_denoiser = fit_averaged(self.global_denoiser, z_global, loss_fn, replace(self.config, steps=steps),
                                            "global diffusion", self.config.ema_decay, seed=self.seed,
                                            metrics=self.global_metrics, progress=progress, section="diffusion")

    def sample(self, n: int, sampler: str, steps: int | None, generator: torch.Generator,
               condition: float | None = None, guidance: float = 0.0, progress: bool = False) -> Tensor:
        """[n, G + T, c]: first the global latent by the full DDPM chain, then the rest given it."""
        G, channels = self.global_tokens, self.latent_shape[-1]
        prefix = sample(self.global_denoiser, self.schedule, n, G * channels, "ddpm", generator=generator,
                        device=self.device, progress=progress)
        return self.rest.sample_given(prefix.reshape(n, G, channels), sampler, steps, generator, progress)

    def state_dict(self) -> dict[str, Tensor]:
        global_tensors = {f"global_model.{k}": v for k, v in self.global_denoiser.state_dict().items()}
        return {**self.rest.state_dict(), **global_tensors}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.rest.load_state_dict(tensors)
        self.global_denoiser.load_state_dict(strip(tensors, "global_model."))
        self.global_denoiser.eval()
