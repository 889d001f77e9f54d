"""A DDPM over token latents [K, G + T, c] (the tokens autoencoder's) with the transformer denoiser.

Training steps may see crops of the token sequence (train.diffusion.tokens_per_step, whole windows of the
transformer, the global tokens in every crop), so a step costs the same at any T. The G global tokens are
drawn with the others, with half the loss (see token_loss_weights).
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..denoisers import build_denoiser
from ..diffusion import NoiseSchedule, denoising_loss, sample, token_weighted_loss
from ..errors import ConfigError
from ..fitting import TokenCrop, fit_averaged
from .base import register_prior, strip

if TYPE_CHECKING:
    from ..config import DiffusionConfig


def token_loss_weights(num_tokens: int, num_global: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[num_tokens] weights of the denoiser's loss (summing to 1): half on the first num_global (the global
    latent), half on the others. Weighted alike, the one global token of a long crop would have a tiny share of
    the loss, so the global latent, which moves every token at once, would be learnt worst."""
    weights = torch.full((num_tokens,), 0.5 / (num_tokens - num_global), device=device)
    weights[:num_global] = 0.5 / num_global
    return weights


@register_prior("tokens")
class TokenPrior:
    """One token denoiser over the whole latent sequence; sampled with its EMA weights (unless ema_decay = 0)."""

    conditioned = False  # the config refuses a condition for the transformer

    def __init__(self, latent_shape: tuple[int, ...], global_tokens: int, config: DiffusionConfig,
                 device: torch.device, seed: int):
        if len(latent_shape) != 2:
            raise ConfigError(f"train.diffusion.prior=tokens draws token latents [T, c], not this autoencoder's "
                              f"{list(latent_shape)}: set train.diffusion.prior=auto (or flat)")
        self.latent_shape, self.global_tokens = latent_shape, global_tokens
        self.config, self.device, self.seed = config, device, seed
        self.denoiser = build_denoiser(config.arch, latent_shape[1], latent_shape[0], global_tokens,
                                       **config.kwargs).to(device)
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.beta_start, config.beta_end)
        self.metrics: list[dict] = []

    def loss(self, net: nn.Module, batch: Tensor, noise: torch.Generator, token_ids: Tensor | None) -> Tensor:
        """The loss of a batch [b, n, c] (a crop at token_ids [n], or the whole sequence): the global tokens
        weighted half."""
        denoiser = net if token_ids is None else partial(net, token_ids=token_ids)
        if not self.global_tokens:
            return denoising_loss(self.schedule, denoiser, batch, noise)
        weights = token_loss_weights(batch.shape[1], self.global_tokens, batch.device)
        return token_weighted_loss(self.schedule, denoiser, batch, weights, noise)

    def fit(self, z: Tensor, condition: Tensor | None = None, progress: bool = True) -> None:
        """Train on z [K, G + T, c], on crops of train.diffusion.tokens_per_step tokens when that is under T."""
        cfg = self.config
        tokens = self.latent_shape[0] - self.global_tokens
        crop = (TokenCrop(cfg.tokens_per_step, self.denoiser.window, self.global_tokens)
                if 0 < cfg.tokens_per_step < tokens else None)
        self.denoiser = fit_averaged(self.denoiser, z, self.loss, cfg, "diffusion", cfg.ema_decay, seed=self.seed,
                                     metrics=self.metrics, progress=progress, crop=crop)

    def sample(self, n: int, sampler: str, steps: int | None, generator: torch.Generator,
               condition: float | None = None, guidance: float = 0.0, progress: bool = False) -> Tensor:
        return sample(self.denoiser, self.schedule, n, self.latent_shape, sampler, steps, generator, self.device,
                      progress)

    def state_dict(self) -> dict[str, Tensor]:
        return {f"model.{k}": v for k, v in self.denoiser.state_dict().items()}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.denoiser.load_state_dict(strip(tensors, "model."))
        self.denoiser.eval()
