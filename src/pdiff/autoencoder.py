"""The parameter autoencoder: compresses standardised parameter vectors [B, D] to latents [B, latent_dim].

p-diff trains the diffusion model in this latent space. The autoencoder is trained with noise
augmentation (paper, Sec. 3): additive Gaussian noise on the input parameters and, much stronger, on the
latents, so that the decoder maps a whole neighbourhood of each latent to good parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ParameterAutoencoder(nn.Module, ABC):
    """Shared forward pass with noise augmentation; subclasses define `encode` and `decode`.

    In training mode, x + input_noise * N(0, 1) is encoded and z + latent_noise * N(0, 1) decoded
    (additive, as in the paper; the official v1 code interpolated instead). In eval mode no noise.
    """

    def __init__(self, dim: int, latent_dim: int, input_noise: float, latent_noise: float):
        super().__init__()
        self.dim = dim
        self.latent_dim = latent_dim
        self.input_noise = input_noise
        self.latent_noise = latent_noise

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Parameters [B, D] -> latents [B, latent_dim]."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, latent_dim] -> parameters [B, D]."""

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct x [B, D] -> [B, D], with noise augmentation in training mode."""
        if self.training:
            x = x + self.input_noise * torch.randn_like(x)
        z = self.encode(x)  # [B, latent_dim]
        if self.training:
            z = z + self.latent_noise * torch.randn_like(z)
        return self.decode(z)


class MLPAutoencoder(ParameterAutoencoder):
    """D -> hidden -> latent_dim and back, with LayerNorm + LeakyReLU after the hidden layer.

    Orders of magnitude cheaper than the conv design on a CPU (2048-512-64: ~15 ms a step at batch 50).
    """

    def __init__(
        self,
        dim: int,
        latent_dim: int = 64,
        hidden: int = 512,
        input_noise: float = 0.001,
        latent_noise: float = 0.1,
    ):
        super().__init__(dim, latent_dim, input_noise, latent_noise)
        self.encoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(), nn.Linear(hidden, latent_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.LayerNorm(hidden), nn.LeakyReLU(), nn.Linear(hidden, dim)
        )

    def encode(self, x: Tensor) -> Tensor:
        """[B, D] -> [B, latent_dim]"""
        return self.encoder(x)

    def decode(self, z: Tensor) -> Tensor:
        """[B, latent_dim] -> [B, D]"""
        return self.decoder(z)


def conv_block(c_in: int, c_out: int, transpose: bool = False) -> nn.Sequential:
    """A stride-2 (transposed) Conv1d that halves (doubles) the length, then GroupNorm + LeakyReLU.

    GroupNorm(1, c) normalises over channels and length, so it also works where the length is 1
    (InstanceNorm1d does not).
    """
    conv = nn.ConvTranspose1d if transpose else nn.Conv1d
    return nn.Sequential(
        conv(c_in, c_out, kernel_size=4, stride=2, padding=1), nn.GroupNorm(1, c_out), nn.LeakyReLU()
    )


class ConvAutoencoder(ParameterAutoencoder):
    """p-diff's 1-D convolutional autoencoder over the flattened parameter vector.

    The vector is zero-padded to a multiple of 2**len(channels), read as a 1-channel signal and halved
    in length by each strided conv block; a linear layer projects the result to a flat latent. The
    decoder mirrors it and crops back to D.
    """

    def __init__(
        self,
        dim: int,
        latent_dim: int = 64,
        channels: tuple[int, ...] = (64, 128, 256),
        input_noise: float = 0.001,
        latent_noise: float = 0.1,
    ):
        super().__init__(dim, latent_dim, input_noise, latent_noise)
        scale = 2 ** len(channels)
        self.padded_dim = -(-dim // scale) * scale
        self.bottleneck_shape = (channels[-1], self.padded_dim // scale)  # (C, L) after the last block
        flat = channels[-1] * self.padded_dim // scale

        widths = (1, *channels)
        self.encoder = nn.Sequential(*(conv_block(a, b) for a, b in pairwise(widths)))
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        back = widths[::-1]  # e.g. 256, 128, 64, 1
        self.decoder = nn.Sequential(
            *(conv_block(a, b, transpose=True) for a, b in pairwise(back[:-1])),
            # The last layer is linear: standardised parameters take any sign and scale.
            nn.ConvTranspose1d(back[-2], 1, kernel_size=4, stride=2, padding=1),
        )

    def encode(self, x: Tensor) -> Tensor:
        """[B, D] -> [B, latent_dim]"""
        x = F.pad(x, (0, self.padded_dim - self.dim)).unsqueeze(1)  # [B, 1, Dpad]
        h = self.encoder(x)  # [B, C, Dpad / 2**len(channels)]
        return self.to_latent(h.flatten(1))

    def decode(self, z: Tensor) -> Tensor:
        """[B, latent_dim] -> [B, D]"""
        h = self.from_latent(z).view(-1, *self.bottleneck_shape)  # [B, C, L]
        return self.decoder(h).squeeze(1)[:, : self.dim]  # [B, Dpad] -> [B, D]


AUTOENCODERS: dict[str, type[ParameterAutoencoder]] = {"mlp": MLPAutoencoder, "conv1d": ConvAutoencoder}


def build_autoencoder(arch: str, dim: int, **kwargs) -> ParameterAutoencoder:
    """Build the autoencoder named `arch` (a key of AUTOENCODERS) for vectors of length `dim`."""
    if arch not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder arch {arch!r}; choose one of {sorted(AUTOENCODERS)}")
    return AUTOENCODERS[arch](dim, **kwargs)
