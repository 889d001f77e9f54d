"""The 1-D convolutional blocks of p-diff's conv1d autoencoder and denoiser: a stride-2 (transposed) Conv1d, a
norm and LeakyReLU, with the kernel size and the norm as arguments (p-diff's blocks: kernel 4, GroupNorm; the
official code's: kernel 7, BatchNorm)."""

from __future__ import annotations

from torch import nn

CONV_NORMS = ("group", "batch")


def conv_block(c_in: int, c_out: int, transpose: bool = False, kernel_size: int = 4, norm: str = "group"
               ) -> nn.Sequential:
    """A stride-2 (transposed) Conv1d that halves (doubles) an even length, then a norm + LeakyReLU.

    norm "group": GroupNorm(1, c), which normalises over channels and length, so it also works where the length
    is 1 (InstanceNorm1d does not) and gives each vector the same output whatever else is in its batch. "batch":
    BatchNorm1d with batch statistics in training and at decode alike (track_running_stats=False), as the
    official p-diff code decodes with its autoencoder in train mode: a generated vector then depends on the
    others decoded with it. Any kernel_size >= 2 keeps the length exact (padding and output padding follow).
    """
    normalise = nn.GroupNorm(1, c_out) if norm == "group" else nn.BatchNorm1d(c_out, track_running_stats=False)
    return nn.Sequential(strided_conv(c_in, c_out, transpose, kernel_size), normalise, nn.LeakyReLU())


def strided_conv(c_in: int, c_out: int, transpose: bool, kernel_size: int) -> nn.Module:
    """A stride-2 Conv1d [B, c_in, L] -> [B, c_out, L / 2], or ConvTranspose1d -> [B, c_out, 2 L], L even."""
    padding = (kernel_size - 1) // 2
    if transpose:
        return nn.ConvTranspose1d(c_in, c_out, kernel_size, stride=2, padding=padding,
                                  output_padding=2 + 2 * padding - kernel_size)
    return nn.Conv1d(c_in, c_out, kernel_size, stride=2, padding=padding)


def check_conv_layers(kernel_size: int, norm: str) -> None:
    """The conv1d networks' kernel_size and norm, or a ValueError naming the bad one."""
    if norm not in CONV_NORMS:
        raise ValueError(f"norm {norm!r}: choose one of {', '.join(CONV_NORMS)}")
    if not isinstance(kernel_size, int) or kernel_size < 2:
        raise ValueError(f"kernel_size {kernel_size!r}: give a whole number of at least 2 (p-diff's blocks use 4, "
                         "the official code's 7)")
