"""Classifier architectures, each a one-line entry in `MODELS` (name -> factory)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch import nn


def conv_bn_relu(conv: nn.Module, channels: int, norm: Callable[[int], nn.Module]) -> nn.Sequential:
    return nn.Sequential(conv, norm(channels), nn.ReLU(inplace=True))


class ConvNet1d(nn.Module):
    """Small 1-D ConvNet for MNIST-1D: three conv+BN+ReLU blocks (two stride-2), then a linear head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (16, 32, 32)):
        super().__init__()
        in_channels, length = input_shape
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            conv_bn_relu(nn.Conv1d(in_channels, c1, 5, padding=2, bias=False), c1, nn.BatchNorm1d),
            conv_bn_relu(nn.Conv1d(c1, c2, 3, stride=2, padding=1, bias=False), c2, nn.BatchNorm1d),
            conv_bn_relu(nn.Conv1d(c2, c3, 3, stride=2, padding=1, bias=False), c3, nn.BatchNorm1d),
        )
        self.head = nn.Linear(c3 * math.ceil(length / 4), num_classes)

    def forward(self, x):  # x: [B, C, L]
        return self.head(self.features(x).flatten(1))


class MLP(nn.Module):
    """MLP with a normalization layer after every hidden linear layer (the paper's small MLPs)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (128, 64),
                 norm: str = "batch"):
        super().__init__()
        norms = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}
        if norm not in norms:
            raise ValueError(f"model.kwargs.norm={norm!r}: choose one of {', '.join(norms)}")
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for h in hidden:
            layers += [nn.Linear(width, h), norms[norm](h), nn.ReLU(inplace=True)]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class ConvNet3(nn.Module):
    """The paper's ConvNet-3: three conv+BN+ReLU+maxpool blocks and a linear head."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64, 64)):
        super().__init__()
        in_channels, height, width = input_shape
        blocks, c_in = [], in_channels
        for c_out in channels:
            blocks += [conv_bn_relu(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), c_out, nn.BatchNorm2d),
                       nn.MaxPool2d(2)]
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        shrink = 2 ** len(channels)
        self.head = nn.Linear(c_in * (height // shrink) * (width // shrink), num_classes)

    def forward(self, x):  # x: [B, C, H, W]
        return self.head(self.features(x).flatten(1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet1d": ConvNet1d,
    "mlp": MLP,
    "convnet3": ConvNet3,
}


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Instantiate a registered architecture for inputs of `input_shape` (without the batch dim)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(sorted(MODELS))}")
    return MODELS[name](tuple(input_shape), num_classes, **kwargs)
