"""Generator families (train.family): what ParameterGenerator puts between the standardised parameter vectors
and the latent prior it fits on their codes.

- "latent_diffusion" (p-diff's): a trained autoencoder (train.autoencoder) and the DDPM prior train.diffusion.prior
  names;
- "flow": no trained autoencoder: the standardised vectors themselves, or for large D their coordinates on the
  training checkpoints' first principal axes (`Projection`, rank train.autoencoder.latent_dim: the vectors
  themselves when that is D or more), and the flow-matching prior (pdiff.priors.flow) over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from .autoencoder import ParameterAutoencoder, build_autoencoder
from .fitting import TokenCrop, fit_network

if TYPE_CHECKING:
    from .config import DiffusionConfig, TrainConfig


class Projection(nn.Module):
    """x [B, D] -> its coordinates on `rank` principal axes of the training vectors, z = (x - mean) V^T [B, rank],
    and back, x = z V + mean; with rank >= D, the identity (z = x). Fitted, not trained: `fit` reads the axes off
    the training vectors' SVD. Rows of V beyond the training vectors' own rank (K - 1) stay zero."""

    global_tokens = 0  # no global latent

    def __init__(self, dim: int, rank: int):
        super().__init__()
        self.dim, self.identity = dim, rank >= dim
        self.latent_shape = (dim,) if self.identity else (rank,)
        self.register_buffer("mean", torch.zeros(0 if self.identity else dim))  # [D]
        self.register_buffer("axes", torch.zeros(0 if self.identity else rank, dim))  # V [rank, D], orthonormal rows

    def fit(self, x: Tensor) -> None:
        """The axes of the standardised training vectors x [K, D]."""
        if self.identity:
            return
        self.mean = x.mean(0)
        _, _, vh = torch.linalg.svd(x - self.mean, full_matrices=False)  # [min(K, D), D]
        rank = min(len(vh), len(self.axes))
        self.axes = torch.zeros_like(self.axes)
        self.axes[:rank] = vh[:rank]

    def encode(self, x: Tensor) -> Tensor:
        return x if self.identity else (x - self.mean) @ self.axes.T

    def decode(self, z: Tensor) -> Tensor:
        return z if self.identity else z @ self.axes + self.mean

    def latent_spread(self, deviations: Tensor) -> Tensor:
        """One spread per coordinate [d] (a principal axis's variance falls with its rank: whitened, each counts
        alike for the flow)."""
        return deviations.std(dim=0)


Coder = ParameterAutoencoder | Projection  # what the vectors are coded with before the prior


def build_coder(dim: int, numels: Sequence[int], config: TrainConfig) -> Coder:
    """The family's coder for vectors [D] made of tensors of `numels` numbers."""
    ae = config.autoencoder
    if config.family == "flow":
        return Projection(dim, ae.latent_dim)
    return build_autoencoder(ae.arch, dim, numels, latent_dim=ae.latent_dim, input_noise=ae.input_noise,
                             latent_noise=ae.latent_noise, **ae.kwargs)


def prior_config(config: TrainConfig) -> DiffusionConfig:
    """train.diffusion as the family's prior reads it: the flow family always has the flow prior."""
    return replace(config.diffusion, prior="flow") if config.family == "flow" else config.diffusion


def fit_coder(coder: Coder, x: Tensor, config: TrainConfig, seed: int, metrics: list[dict],
              progress: bool = True) -> None:
    """Fit the coder on the standardised training vectors x [K, D]: a projection reads its axes off them, an
    autoencoder trains train.autoencoder.steps steps (with its noise augmentation); left in eval mode."""
    if isinstance(coder, Projection):
        coder.fit(x)
    else:
        cfg = config.autoencoder
        data, crop = coder.prepare_training(x, cfg.tokens_per_step)
        fit_network(coder, data, lambda net, batch, _, ids: coder.training_loss(net, batch, ids), cfg, "autoencoder",
                    seed=seed, metrics=metrics, progress=progress, crop=TokenCrop(crop) if crop else None)
    coder.eval()
