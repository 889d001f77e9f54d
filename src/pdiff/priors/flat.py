"""The paper's prior: a DDPM over flat latents [K, d] (train.diffusion.arch mlp or conv1d), optionally
conditioned on validation accuracy.

With train.diffusion.condition=accuracy the denoiser also learns each checkpoint's validation accuracy
(standardised over the training checkpoints), dropped with probability p_uncond so that the same network is the
unconditional model too, and `sample(condition=..., guidance=...)` asks for one (classifier-free guidance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..denoisers import build_denoiser
from ..diffusion import NoiseSchedule, denoising_loss, guidance_loss, sample
from ..errors import ArtifactError, ConfigError
from ..fitting import fit_averaged
from .base import register_prior, strip

if TYPE_CHECKING:
    from ..config import DiffusionConfig


@register_prior("flat")
class FlatPrior:
    """A DDPM with one denoiser over latents [K, d]; sampled with its EMA weights (unless ema_decay = 0)."""

    def __init__(self, latent_shape: tuple[int, ...], global_tokens: int, config: DiffusionConfig,
                 device: torch.device, seed: int):
        if len(latent_shape) != 1:
            raise ConfigError(f"train.diffusion.prior=flat draws flat latents [d], not this autoencoder's "
                              f"{list(latent_shape)}: set train.diffusion.prior=auto (or tokens)")
        self.latent_shape, self.config, self.device, self.seed = latent_shape, config, device, seed
        self.conditioned = config.condition == "accuracy"
        conditioning = {"conditioned": True} if self.conditioned else {}
        self.denoiser = build_denoiser(config.arch, latent_shape[0], **conditioning, **config.kwargs).to(device)
        self.schedule = NoiseSchedule(config.num_train_timesteps, config.beta_start, config.beta_end)
        self.accuracies: Tensor | None = None  # conditioned: the training checkpoints' val accuracies [K]
        self.metrics: list[dict] = []

    def fit(self, z: Tensor, condition: Tensor | None = None, progress: bool = True) -> None:
        """Train the denoiser on z [K, d]; conditioned, on z with its accuracies condition [K] (fractions)."""
        cfg = self.config
        if self.conditioned:
            self.accuracies = condition.float().cpu()
            c = self.standardise_accuracy(self.accuracies).to(self.device)  # [K]
            z = torch.cat([z, c[:, None]], dim=1)  # [K, d + 1]: each latent's condition rides in its last column

        def loss_fn(net: nn.Module, batch: Tensor, noise: torch.Generator, token_ids: Tensor | None) -> Tensor:
            if self.conditioned:
                return guidance_loss(self.schedule, net, batch[:, :-1], batch[:, -1], cfg.p_uncond, noise)
            return denoising_loss(self.schedule, net, batch, noise)

        self.denoiser = fit_averaged(self.denoiser, z, loss_fn, cfg, "diffusion", cfg.ema_decay, seed=self.seed,
                                     metrics=self.metrics, progress=progress)

    def sample(self, n: int, sampler: str, steps: int | None, generator: torch.Generator,
               condition: float | None = None, guidance: float = 0.0, progress: bool = False) -> Tensor:
        """[n, d]; with `condition` (conditioned), latents of models of that validation accuracy, guided by w =
        `guidance`; without, the unconditional model."""
        c = None if condition is None else self.standardise_accuracy(torch.tensor(condition)).item()
        return sample(self.denoiser, self.schedule, n, self.latent_shape, sampler, steps, generator, self.device,
                      progress, c=c, guidance=guidance)

    def standardise_accuracy(self, accuracy: Tensor) -> Tensor:
        """Validation accuracies (fractions) in units of the training checkpoints' mean and std: the condition."""
        return ((accuracy.double() - self.accuracies.double().mean()) / self.accuracies.double().std()).float()

    def accuracy_at(self, percentile: float) -> float:
        return torch.quantile(self.accuracies.double(), percentile / 100).item()

    def state_dict(self) -> dict[str, Tensor]:
        tensors = {f"model.{k}": v for k, v in self.denoiser.state_dict().items()}
        return {**tensors, "accuracies": self.accuracies} if self.conditioned else tensors

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.denoiser.load_state_dict(strip(tensors, "model."))
        self.denoiser.eval()
        self.accuracies = tensors.get("accuracies")
        if self.conditioned and self.accuracies is None:
            raise ArtifactError("a conditioned generator without its checkpoints' accuracies: rerun "
                                "`pdiff train --force`")
