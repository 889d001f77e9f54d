"""The parameter autoencoder: compresses standardised parameter vectors [B, D] to latents [B, latent_dim]
(mlp, conv1d) or, for long vectors, to a sequence of token latents [B, T, latent_dim] (tokens).

p-diff trains the diffusion model in this latent space. The autoencoder is trained with noise
augmentation (paper, Sec. 3): additive Gaussian noise on the input parameters and, much stronger, on the
latents, so that the decoder maps a whole neighbourhood of each latent to good parameters.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import partial
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .conv_blocks import check_conv_layers, conv_block, strided_conv
from .params import TokenLayout


class ParameterAutoencoder(nn.Module, ABC):
    """Shared forward pass with noise augmentation; subclasses define `encode` and `decode`.

    In training mode, x + input_noise * N(0, 1) is encoded and z + latent_noise * N(0, 1) decoded
    (additive, as in the paper; the official v1 code interpolated instead). In eval mode no noise.
    """

    global_tokens = 0  # G: latent tokens that code the whole vector (TokenAutoencoder with a global latent)
    latent = "flat"  # the latent of one model: "flat" [d] or "tokens" [T, c] (which alone can be cropped)
    global_kwarg: str | None = None  # the kwarg that gives it a global latent, if it can have one

    def __init__(self, dim: int, latent_dim: int, input_noise: float, latent_noise: float):
        super().__init__()
        self.dim = dim
        self.latent_dim = latent_dim
        self.input_noise = input_noise
        self.latent_noise = latent_noise

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape of one model's latent: (latent_dim,) here, (G + T, latent_dim) for tokens."""
        return (self.latent_dim,)

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Parameters [B, D] -> latents [B, latent_dim]."""

    @abstractmethod
    def decode(self, z: Tensor) -> Tensor:
        """Latents [B, latent_dim] -> parameters [B, D]."""

    def forward(self, x: Tensor) -> Tensor:
        """Reconstruct x [B, D] -> [B, D], with noise augmentation in training mode."""
        return self.reconstruct(x, self.encode, self.decode)

    def latent_spread(self, deviations: Tensor) -> Tensor:
        """The spread that latents are divided by before the prior, from their deviations from their mean
        [K, *latent_shape]: one for all coordinates here."""
        return deviations.std()

    def prepare_training(self, x: Tensor, tokens_per_step: int) -> tuple[Tensor, int]:
        """(what training draws its mini-batches from, the token crop a step trains on: 0 for whole rows) for
        the standardised training vectors x [K, D]; here x itself, whole (only tokens crops)."""
        return x, 0

    def training_loss(self, net: nn.Module, batch: Tensor, token_ids: Tensor | None) -> Tensor:
        """The reconstruction MSE of a mini-batch [b, D] through `net` (this autoencoder, or its DDP wrapper that
        the forward pass must go through); the noise augmentation happens inside forward."""
        return F.mse_loss(net(batch), batch)

    def reconstruct(self, x: Tensor, encode: Callable[[Tensor], Tensor], decode: Callable[[Tensor], Tensor]
                    ) -> Tensor:
        """decode(encode(x)), with the input and latent noise added in training mode."""
        if self.training:
            x = x + self.input_noise * torch.randn_like(x)
        z = encode(x)  # [B, latent_dim]
        if self.training:
            z = z + self.latent_noise * torch.randn_like(z)
        return decode(z)


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
        kernel_size: int = 4,
        norm: str = "group",
    ):
        super().__init__(dim, latent_dim, input_noise, latent_noise)
        check_conv_layers(kernel_size, norm)
        scale = 2 ** len(channels)
        self.padded_dim = -(-dim // scale) * scale
        self.bottleneck_shape = (channels[-1], self.padded_dim // scale)  # (C, L) after the last block
        flat = channels[-1] * self.padded_dim // scale

        widths = (1, *channels)
        self.encoder = nn.Sequential(*(conv_block(a, b, False, kernel_size, norm) for a, b in pairwise(widths)))
        self.to_latent = nn.Linear(flat, latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        back = widths[::-1]  # e.g. 256, 128, 64, 1
        self.decoder = nn.Sequential(
            *(conv_block(a, b, True, kernel_size, norm) for a, b in pairwise(back[:-1])),
            # The last layer is linear: standardised parameters take any sign and scale.
            strided_conv(back[-2], 1, True, kernel_size),
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


class TokenAutoencoder(ParameterAutoencoder):
    """Cuts the vector into tokens along tensor boundaries and codes every token with one shared small network
    plus a linear map of its own.

    A token is `token_size` numbers of one tensor (each tensor zero-padded to whole tokens, see TokenLayout);
    its position is a learned embedding of (tensor index, offset in the tensor), added after the first layer.
    Encoder per token t: token_size -> hidden (+ position) -> LayerNorm, LeakyReLU -> latent_dim, plus
    (token - bias_t) @ encoder_basis[t]; the decoder mirrors it, adds latent @ decoder_basis[t] and a learned
    per-token bias [T, token_size].

    Why a basis per token: the shared network's last layer gives every token the same `hidden`-dimensional
    output space, but each token's checkpoints differ along directions of its own. On mnist-mlp-full (tokens of
    1024 numbers, hidden 128) the shared network alone kept 13% of how the checkpoints differ from their mean (34%
    with standardise=deviation), and every generated model was their average; the top 8 principal directions of
    each token hold 99% of it.
    `init_from` starts the bias at the mean and the bases at those directions (per-token PCA), with the shared
    network silent, so training starts from the best linear code and refines it.

    Global latent (`global_dim` > 0): the vector's coordinates along the checkpoints' top `global_dim` principal
    directions (global_basis [global_dim, D], fitted by `init_from` and then fixed) ride in G = ceil(global_dim /
    latent_dim) extra tokens at the front of the latent sequence; the tokens code what is left (x minus its
    global part). Why: token latents drawn by the denoiser had each token's scale, but the tokens did not agree
    (on mnist-mlp-full 23% of the drawn latents' energy lay in the directions that hold 99.8% of the checkpoints'),
    so a generated model was a patchwork that averaged the checkpoints out. Checkpoints of one run differ along
    few directions of the whole vector (16 hold 99.8% there), so a few global numbers carry what must agree.

    Parameters and cost grow linearly with D (bias, bases and global basis: (2 latent_dim + global_dim + 1)
    numbers per number of D), not with D x hidden. Latents are [B, G + T, latent_dim]; the padding never reaches
    the output, so a loss on decode's [B, D] keeps it out.
    """

    latent, global_kwarg = "tokens", "global_dim"

    def __init__(
        self,
        dim: int,
        latent_dim: int = 16,
        token_size: int = 256,
        hidden: int = 256,
        input_noise: float = 0.001,
        latent_noise: float = 0.1,
        numels: Sequence[int] | None = None,
        global_dim: int = 0,
    ):
        super().__init__(dim, latent_dim, input_noise, latent_noise)
        if global_dim < 0:
            raise ValueError(f"global_dim must be 0 (no global latent) or more, got {global_dim}")
        numels = tuple(numels or (dim,))  # the tensors' sizes; one tensor when not given
        if sum(numels) != dim:
            raise ValueError(f"tensor sizes {numels} add up to {sum(numels)}, not to dim={dim}")
        self.layout = TokenLayout(numels, token_size)
        # Buffers, not saved: the layout is rebuilt from the spec.
        self.register_buffer("tensor_index", self.layout.tensor_index, persistent=False)  # [T]
        self.register_buffer("offset", self.layout.offset, persistent=False)  # [T]
        num_tensors, longest, T = len(numels), self.layout.longest, self.layout.num_tokens
        self.encoder_in = nn.Linear(token_size, hidden)
        self.encoder_tensor, self.encoder_offset = nn.Embedding(num_tensors, hidden), nn.Embedding(longest, hidden)
        self.encoder_out = nn.Sequential(nn.LayerNorm(hidden), nn.LeakyReLU(), nn.Linear(hidden, latent_dim))
        self.decoder_in = nn.Linear(latent_dim, hidden)
        self.decoder_tensor, self.decoder_offset = nn.Embedding(num_tensors, hidden), nn.Embedding(longest, hidden)
        self.decoder_out = nn.Sequential(nn.LayerNorm(hidden), nn.LeakyReLU(), nn.Linear(hidden, token_size))
        self.token_bias = nn.Parameter(torch.zeros(T, token_size))  # [T, token_size]
        self.encoder_basis = nn.Parameter(torch.zeros(T, token_size, latent_dim))  # [T, token_size, latent_dim]
        self.decoder_basis = nn.Parameter(torch.zeros(T, latent_dim, token_size))  # [T, latent_dim, token_size]
        for table in (self.encoder_tensor, self.encoder_offset, self.decoder_tensor, self.decoder_offset):
            nn.init.normal_(table.weight, std=0.02)
        # Fitted by init_from, not trained; saved with the weights (see split_global).
        self.global_dim = global_dim
        self.global_tokens = -(-global_dim // latent_dim)  # G
        self.register_buffer("global_basis", torch.zeros(global_dim, dim))  # [global_dim, D], orthonormal rows
        self.register_buffer("global_offset", torch.zeros(global_dim))  # [global_dim]: the mean's coordinates

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.global_tokens + self.layout.num_tokens, self.latent_dim)

    def split_global(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x [B, D] -> (its coordinates along the global directions, centred on the checkpoints' mean
        [B, global_dim], the rest x - global part [B, D], which the tokens code; it keeps the mean).

        The coordinates keep their scale: scaled to unit spread, the small directions' errors weighed as much as
        the top one's, and the samples were no closer to the checkpoints (tried on mnist-mlp-full)."""
        with torch.autocast(x.device.type, enabled=False):  # in bf16 the rounding outweighs the rest's spread
            x = x.float()
            coords = x @ self.global_basis.T - self.global_offset  # [B, global_dim]
            return coords, x - coords @ self.global_basis

    @torch.no_grad()
    def init_from(self, x: Tensor) -> None:
        """Start from the training vectors x [K, D]: the bias at their mean, each token's bases at the top
        latent_dim principal directions of its deviations from the mean (components past min(K, token_size)
        stay zero), and the shared network's output layers at zero. The untrained autoencoder is then the
        per-token PCA: it decodes every checkpoint as well as any linear code of latent_dim numbers a token can.
        (A bias started at zero would move about lr a step, too slowly for O(1) means.)
        With a global latent, first the global basis at the top global_dim principal directions of x (rows past
        min(K, D) zero; K centred vectors span at most K - 1, so row K - 1 carries no spread), and the tokens then
        start from the rest."""
        if self.global_dim:
            mean = x.mean(0)  # [D]
            _, _, directions = torch.linalg.svd(x - mean, full_matrices=False)  # [min(K, D), D]
            r = min(self.global_dim, len(directions))
            self.global_basis.zero_()[:r] = directions[:r]
            self.global_offset.copy_(self.global_basis @ mean)
            x = self.split_global(x)[1]
        tokens = self.layout.cut(x)  # [K, T, token_size]
        mean = tokens.mean(0)  # [T, token_size]
        self.token_bias.copy_(mean)
        _, _, directions = torch.linalg.svd((tokens - mean).transpose(0, 1), full_matrices=False)  # [T, r, size]
        r = min(self.latent_dim, directions.shape[1])
        self.decoder_basis.zero_()[:, :r] = directions[:, :r]
        self.encoder_basis.copy_(self.decoder_basis.transpose(1, 2))
        for out in (self.encoder_out[-1], self.decoder_out[-1]):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def encode(self, x: Tensor) -> Tensor:
        """[B, D] -> [B, G + T, latent_dim]: the global coordinates (zero-padded to G tokens), then the tokens."""
        coords, rest = self.split_global(x)
        G, c = self.global_tokens, self.latent_dim
        global_latents = F.pad(coords, (0, G * c - self.global_dim)).view(len(x), G, c)  # [B, G, latent_dim]
        return torch.cat([global_latents, self.encode_tokens(self.layout.cut(rest), None)], dim=1)

    def encode_tokens(self, tokens: Tensor, token_ids: Tensor | None) -> Tensor:
        """Tokens [B, n, token_size] at positions token_ids [n] (None: all T, in order) -> [B, n, latent_dim]."""
        tensor_index, offset = self._positions(token_ids)
        position = self.encoder_tensor(tensor_index) + self.encoder_offset(offset)  # [n, hidden]
        bias, basis = self._own(self.token_bias, token_ids), self._own(self.encoder_basis, token_ids)
        linear = torch.einsum("bns,nsc->bnc", tokens - bias, basis)  # [B, n, latent_dim]
        return self.encoder_out(self.encoder_in(tokens) + position) + linear

    def decode_tokens(self, z: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """[B, n, latent_dim] at positions token_ids [n] (None: all T) -> tokens [B, n, token_size], padding
        included (decode drops it)."""
        tensor_index, offset = self._positions(token_ids)
        position = self.decoder_tensor(tensor_index) + self.decoder_offset(offset)  # [n, hidden]
        bias, basis = self._own(self.token_bias, token_ids), self._own(self.decoder_basis, token_ids)
        linear = torch.einsum("bnc,ncs->bns", z, basis)  # [B, n, token_size]
        return self.decoder_out(self.decoder_in(z) + position) + linear + bias

    def decode(self, z: Tensor) -> Tensor:
        """[B, G + T, latent_dim] -> [B, D]"""
        G = self.global_tokens
        coords = z[:, :G].flatten(1)[:, : self.global_dim].float()  # [B, global_dim]
        with torch.autocast(z.device.type, enabled=False):  # as in split_global
            global_part = coords @ self.global_basis
        return self.layout.join(self.decode_tokens(z[:, G:])) + global_part

    def forward(self, x: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """Reconstruct x [B, D] -> [B, D]; or, with token_ids [n], the tokens x [B, n, token_size] cut at those
        positions from the rest after the global part (split_global) -> [B, n, token_size] (training on a subset
        of the tokens: the cost of a step then does not grow with D). Noise augmentation in training mode, as in
        the base class."""
        if token_ids is None:
            return super().forward(x)
        return self.reconstruct(x, partial(self.encode_tokens, token_ids=token_ids),
                                partial(self.decode_tokens, token_ids=token_ids))

    def latent_spread(self, deviations: Tensor) -> Tensor:
        """One spread per token [G + T, 1]: the global tokens vary far more than the tokens that code what is left
        (mnist-mlp-full: a spread of 259 against 0.1-0.6)."""
        return deviations.std(dim=(0, 2))[:, None]

    def prepare_training(self, x: Tensor, tokens_per_step: int) -> tuple[Tensor, int]:
        """Start from x [K, D] (init_from); with 0 < tokens_per_step < T, each step trains on a crop of that many
        tokens of the rest after the global part: (its tokens [K, T, token_size], zeros in the padding,
        tokens_per_step); else (x, 0)."""
        self.init_from(x)
        if not 0 < tokens_per_step < self.layout.num_tokens:
            return x, 0
        return self.layout.cut(self.split_global(x)[1]), tokens_per_step

    def training_loss(self, net: nn.Module, batch: Tensor, token_ids: Tensor | None) -> Tensor:
        """As the base class's for whole vectors; for a crop batch [b, n, token_size] at token_ids [n], the MSE
        of its tokens, the padding left out."""
        if token_ids is None:
            return super().training_loss(net, batch, None)
        kept = self.layout.mask.to(batch.device)[token_ids].expand_as(batch)  # [b, n, token_size]
        return F.mse_loss(net(batch, token_ids)[kept], batch[kept])

    @staticmethod
    def _own(table: Tensor, token_ids: Tensor | None) -> Tensor:
        """The rows of a per-token table [T, ...] for the tokens token_ids [n] (None: all T)."""
        return table if token_ids is None else table[token_ids]

    def _positions(self, token_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """(tensor index, offset) of the tokens token_ids [n], or of all T."""
        return self._own(self.tensor_index, token_ids), self._own(self.offset, token_ids)


# What a constructor is given from the data and the config's own keys, never from train.autoencoder.kwargs.
AUTOENCODER_ARGUMENTS = ("dim", "latent_dim", "input_noise", "latent_noise", "numels")
AUTOENCODERS: dict[str, type[ParameterAutoencoder]] = {
    "mlp": MLPAutoencoder, "conv1d": ConvAutoencoder, "tokens": TokenAutoencoder}


def build_autoencoder(arch: str, dim: int, numels: Sequence[int] | None = None, **kwargs) -> ParameterAutoencoder:
    """Build the autoencoder named `arch` (a key of AUTOENCODERS) for vectors of length `dim`.

    `numels` (the sizes of the tensors that make up the vector, ParamSpec.numels) is what tokens cuts along;
    the other archs read the vector as one signal and ignore it.
    """
    if arch not in AUTOENCODERS:
        raise ValueError(f"unknown autoencoder arch {arch!r}; choose one of {sorted(AUTOENCODERS)}")
    if AUTOENCODERS[arch] is TokenAutoencoder:
        kwargs["numels"] = numels
    return AUTOENCODERS[arch](dim, **kwargs)
