"""The denoiser networks of the latent DDPM: eps_theta(x_t, t[, c]), knowing nothing of the noise schedule.

A denoiser maps (x_t [B, d], t [B]) to the predicted noise eps [B, d] (the transformer: x_t [B, T, c] to
[B, T, c]); the schedule, losses and samplers are in pdiff.diffusion. A conditioned denoiser
(`conditioned=True`, mlp and conv1d) also takes c [B], a scalar condition per sample (pdiff: the checkpoint's
standardised validation accuracy), where NaN marks a dropped condition: one network is then both the
conditional and the unconditional model of classifier-free guidance (Ho & Salimans 2022).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdiff.conv_blocks import check_conv_layers, conv_block


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of integer timesteps, one per sample: t [B] -> [B, dim].

    Frequencies run geometrically from 1 to 1/10000 (Transformer / DDPM style). Each row uses its
    own t; the official v1 code embedded sample 0's timestep for the whole batch, a bug.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)  # [half]
    args = t.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)  # [B, 2 * half]
    return F.pad(emb, (0, dim - 2 * half))  # a zero column when dim is odd


class TimeMLP(nn.Module):
    """Sinusoidal embedding followed by a small MLP: t [B] -> [B, time_dim]."""

    def __init__(self, time_dim: int):
        super().__init__()
        self.time_dim = time_dim
        self.mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.time_dim))


class ConditionEmbedding(nn.Module):
    """A scalar condition c [B] -> [B, time_dim], added to the time embedding; NaN rows get a learned null.

    The null embedding stands for "no condition": training drops conditions to it with probability p_uncond,
    so the same weights also model the unconditional distribution (classifier-free guidance).
    """

    def __init__(self, time_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.null = nn.Parameter(torch.zeros(time_dim))

    def forward(self, c: Tensor | None, batch: int) -> Tensor:
        """c [B] (NaN: dropped) or None (all dropped) -> [B, time_dim]"""
        if c is None:
            return self.null.expand(batch, -1)
        dropped = c.isnan()[:, None]  # [B, 1]
        # NaN must not enter the MLP: it would poison the gradients of the rows that are kept.
        return torch.where(dropped, self.null, self.mlp(c.nan_to_num(0.0)[:, None]))


def embed(time: TimeMLP, condition: ConditionEmbedding | None, t: Tensor, c: Tensor | None) -> Tensor:
    """The embedding every block of a denoiser receives: time, plus the condition's if it is conditioned."""
    emb = time(t)  # [B, time_dim]
    if condition is not None:
        return emb + condition(c, len(t))
    if c is not None:
        raise ValueError("this denoiser was built without conditioned=True: it takes no condition")
    return emb


class ResidualBlock(nn.Module):
    """h + W2 act(W1 LN(h) + W_t emb): a pre-norm residual MLP block with the time embedding added."""

    def __init__(self, width: int, time_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.time = nn.Linear(time_dim, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: Tensor, emb: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(self.norm(h)) + self.time(emb)))


class MLPDenoiser(nn.Module):
    """Residual MLP denoiser: dim -> width, `depth` residual blocks with the time embedding, -> dim."""

    latent, takes_condition = "flat", True  # denoises flat latents [B, d]; can be conditioned (see embed)

    def __init__(self, dim: int, width: int = 256, depth: int = 3, time_dim: int = 128, conditioned: bool = False):
        super().__init__()
        self.time = TimeMLP(time_dim)
        self.proj_in = nn.Linear(dim, width)
        self.blocks = nn.ModuleList(ResidualBlock(width, time_dim) for _ in range(depth))
        self.proj_out = nn.Linear(width, dim)
        # Built last, so that the other layers start from the same weights with or without it.
        self.condition = ConditionEmbedding(time_dim) if conditioned else None

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        """x [B, d], t [B] int64 timesteps, c [B] conditions (conditioned only) -> predicted noise [B, d]"""
        emb = embed(self.time, self.condition, t, c)  # [B, time_dim]
        h = self.proj_in(x)  # [B, width]
        for block in self.blocks:
            h = block(h, emb)
        # No norm before the output: the residual stream is linear in x, so the prediction can scale with
        # x_t (eps ~ x_t near t = T); a LayerNorm here caps |eps| and throws far-out samples off.
        return self.proj_out(h)


class ConvDenoiser(nn.Module):
    """p-diff's 1-D conv encoder/decoder denoiser with additive skips and the time embedding per block.

    The latent is zero-padded to a multiple of 2**len(channels) and read as a 1-channel signal. Each
    encoder block halves the length, each decoder block doubles it and adds the encoder activation of
    the same length; a Conv1d head maps back to one channel, cropped to d, plus a gated skip from x.
    """

    latent, takes_condition = "flat", True

    def __init__(self, dim: int, channels: tuple[int, ...] = (64, 128, 256), time_dim: int = 128,
                 conditioned: bool = False, kernel_size: int = 4, norm: str = "group"):
        super().__init__()
        check_conv_layers(kernel_size, norm)  # the blocks' layers, as in ConvAutoencoder
        self.dim = dim
        scale = 2 ** len(channels)
        self.padded_dim = -(-dim // scale) * scale
        self.time = TimeMLP(time_dim)

        widths = (1, *channels)
        self.down = nn.ModuleList(conv_block(a, b, False, kernel_size, norm) for a, b in pairwise(widths))
        back = (*channels[::-1], channels[0])  # e.g. 256, 128, 64, 64: the last block keeps its width
        self.up = nn.ModuleList(conv_block(a, b, True, kernel_size, norm) for a, b in pairwise(back))
        # One time projection per block, added to its output as a per-channel bias.
        self.time_down = nn.ModuleList(nn.Linear(time_dim, c) for c in widths[1:])
        self.time_up = nn.ModuleList(nn.Linear(time_dim, c) for c in back[1:])
        self.head = nn.Conv1d(channels[0], 1, kernel_size=3, padding=1)
        # A linear skip from x with a time-dependent gain: the normalised blocks cannot make the prediction
        # scale with x_t (eps ~ x_t near t = T), which throws far-out samples off.
        self.skip_gain = nn.Linear(time_dim, 1)
        self.condition = ConditionEmbedding(time_dim) if conditioned else None  # last: see MLPDenoiser

    def forward(self, x: Tensor, t: Tensor, c: Tensor | None = None) -> Tensor:
        """x [B, d], t [B] int64 timesteps, c [B] conditions (conditioned only) -> predicted noise [B, d]"""
        emb = embed(self.time, self.condition, t, c)  # [B, time_dim]
        h = F.pad(x, (0, self.padded_dim - self.dim)).unsqueeze(1)  # [B, 1, dpad]
        skips = []
        for block, time in zip(self.down, self.time_down, strict=True):
            h = block(h) + time(emb)[:, :, None]  # [B, C_i, dpad / 2**(i+1)]
            skips.append(h)
        skips = skips[-2::-1]  # encoder outputs at the lengths the decoder blocks produce, deepest first
        for i, (block, time) in enumerate(zip(self.up, self.time_up, strict=True)):
            h = block(h) + time(emb)[:, :, None]
            if i < len(skips):
                h = h + skips[i]
        return self.head(h).squeeze(1)[:, : self.dim] + self.skip_gain(emb) * x  # [B, dpad] -> [B, d]


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows of `window` tokens, optionally shifted by `shift` tokens, with
    a prefix of global tokens.

    Full attention over T tokens costs T^2; within windows it costs T x window, linear in T (and in D).
    A sequence no longer than the window gets full attention. Shifting every other block by half a window
    (as Swin does) lets information cross window edges. The first `num_global` tokens of a longer sequence
    attend to every token, and every window attends to them as well as to itself (global tokens, as in
    Longformer): G x T more, still linear in T. Attention runs through F.scaled_dot_product_attention (its
    memory-efficient kernels); padding keys are masked out.
    """

    def __init__(self, width: int, heads: int, window: int, shift: int = 0):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not a multiple of heads {heads}")
        self.heads, self.window, self.shift = heads, window, shift
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, num_global: int = 0) -> Tensor:
        """[B, L, width] (the first num_global tokens global) -> [B, L, width]"""
        B, L, C = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)  # [B, nh, L, hs]
        if L <= self.window:
            h = F.scaled_dot_product_attention(q, k, v)
        elif num_global:
            G = num_global
            h = torch.cat([F.scaled_dot_product_attention(q[:, :, :G], k, v), self._windowed(q, k, v, G)], dim=2)
        else:
            h = self._windowed(q, k, v, 0)
        return self.proj(h.transpose(1, 2).reshape(B, L, C))

    def _windowed(self, q: Tensor, k: Tensor, v: Tensor, G: int) -> Tensor:
        """The tokens after the G global ones attend within their window and to the global tokens:
        q, k, v [B, nh, G + T, hs] -> [B, nh, T, hs]."""
        B, nh, L, hs = q.shape
        T, W = L - G, self.window
        n_windows = -(-T // W)
        pad = n_windows * W - T  # < window, so no window is padding only
        valid = torch.arange(T + pad, device=q.device) < T  # [Tp]
        if self.shift:
            valid = valid.roll(-self.shift)

        def windows(t: Tensor) -> Tensor:  # [B, nh, G + T, hs] -> [B, nh * n_windows, W, hs]
            t = F.pad(t[:, :, G:], (0, 0, 0, pad))
            return (t.roll(-self.shift, dims=2) if self.shift else t).reshape(B, nh * n_windows, W, hs)

        def with_global(t: Tensor) -> Tensor:  # every window's keys (values): the global ones, then its own
            shared = t[:, :, None, :G].expand(B, nh, n_windows, G, hs).reshape(B, nh * n_windows, G, hs)
            return torch.cat([shared, windows(t)], dim=2)  # [B, nh * n_windows, G + W, hs]

        keys = torch.cat([valid.new_ones(n_windows, G), valid.view(n_windows, W)], dim=1)  # [n_windows, G + W]
        mask = keys[None, :, None].expand(nh, -1, -1, -1).reshape(1, nh * n_windows, 1, G + W)
        h = F.scaled_dot_product_attention(windows(q), with_global(k), with_global(v), attn_mask=mask)
        h = h.reshape(B, nh, n_windows * W, hs)
        if self.shift:
            h = h.roll(self.shift, dims=2)
        return h[:, :, :T]


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: the time embedding added to every token, windowed attention, then an MLP."""

    def __init__(self, width: int, heads: int, window: int, shift: int, time_dim: int):
        super().__init__()
        self.time = nn.Linear(time_dim, width)
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = WindowAttention(width, heads, window, shift)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, h: Tensor, emb: Tensor, num_global: int = 0) -> Tensor:
        """h [B, T, width] (the first num_global tokens global), emb [B, time_dim] -> [B, T, width]"""
        h = h + self.time(emb)[:, None]
        h = h + self.attention(self.norm1(h), num_global)
        return h + self.mlp(self.norm2(h))


class TransformerDenoiser(nn.Module):
    """A small transformer over the token latents [B, T, c] of the tokens autoencoder.

    Each latent token is projected to `width` and given a learned position embedding (one per token) and
    the time embedding; `depth` blocks of windowed attention (every other block shifted by half a window)
    follow, then a linear head and a gated skip from x_t, as in ConvDenoiser (eps ~ x_t near t = T).
    The first `global_tokens` tokens (the autoencoder's global latent) are seen by every window and see every
    token, so that all windows draw one model rather than a patchwork of several (see WindowAttention).
    Cost grows with T x (window + global_tokens), so linearly in D for a fixed token size.
    """

    latent, takes_condition = "tokens", False  # token latents [B, T, c], cropped in whole windows; no condition yet

    def __init__(self, dim: int, tokens: int, width: int = 128, depth: int = 4, heads: int = 4, window: int = 256,
                 time_dim: int = 128, global_tokens: int = 0):
        super().__init__()
        self.window, self.global_tokens = window, global_tokens
        self.time = TimeMLP(time_dim)
        self.proj_in = nn.Linear(dim, width)
        self.position = nn.Parameter(0.02 * torch.randn(tokens, width))  # [T, width]
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, window, window // 2 if i % 2 else 0, time_dim) for i in range(depth))
        self.norm = nn.LayerNorm(width)
        self.proj_out = nn.Linear(width, dim)
        self.skip_gain = nn.Linear(time_dim, 1)

    def forward(self, x: Tensor, t: Tensor, token_ids: Tensor | None = None) -> Tensor:
        """x [B, T, c], t [B] int64 timesteps -> predicted noise [B, T, c].

        token_ids [n]: x is the crop [B, n, c] of the sequence at those positions, the global tokens first
        (training on crops: the cost of a step then does not grow with T); its windows are those of the crop.
        """
        emb = self.time(t)  # [B, time_dim]
        position = self.position if token_ids is None else self.position[token_ids]  # [n, width]
        h = self.proj_in(x) + position  # [B, n, width]
        for block in self.blocks:
            h = block(h, emb, self.global_tokens)
        return self.proj_out(self.norm(h)) + self.skip_gain(emb)[:, :, None] * x


DENOISERS: dict[str, type[nn.Module]] = {"mlp": MLPDenoiser, "conv1d": ConvDenoiser,
                                         "transformer": TransformerDenoiser}
TOKEN_DENOISERS = tuple(name for name, net in DENOISERS.items() if net.latent == "tokens")  # the others: [B, d]
# What build_denoiser and the generator give a constructor, never train.diffusion.kwargs.
DENOISER_ARGUMENTS = ("dim", "tokens", "conditioned", "global_tokens")


def build_denoiser(arch: str, dim: int, tokens: int | None = None, global_tokens: int = 0, **kwargs) -> nn.Module:
    """Build the denoiser named `arch` (a key of DENOISERS) for latents [dim] or, token denoisers, [tokens, dim]
    (of which the first `global_tokens` are a global latent, see TransformerDenoiser)."""
    if arch not in DENOISERS:
        raise ValueError(f"unknown denoiser arch {arch!r}; choose one of {sorted(DENOISERS)}")
    if arch in TOKEN_DENOISERS:
        if tokens is None:
            raise ValueError(f"the {arch} denoiser works on token latents [T, c]: give the number of tokens T")
        kwargs.update(tokens=tokens, global_tokens=global_tokens)
    return DENOISERS[arch](dim, **kwargs)

