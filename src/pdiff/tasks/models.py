"""Classifier architectures, each a one-line entry in `MODELS` (name -> factory), and any other by name.

Every factory takes the dataset's input shape [C, H, W] (or [C, L]) and number of classes. Besides the
registry, `model.name` may be any timm architecture (`timm_model`) or a factory of your own by import path,
"package.module:factory" (`pdiff.tasks.imported`). The paper's
default subset of each is its last two normalization layers (`last_norm:2`), which are the layers the
official code names: ResNet-18 `layer4.1.bn1/bn2`, ResNet-50 `layer4.2.bn2/bn3`, ViT the last block's
`norm2` + the final `norm`, ConvNeXt the last block's `norm` + `head.norm` (tests/tasks/test_models.py).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .imported import build_imported_model, is_import_path, resolve


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


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv+BN, identity (or 1x1 conv+BN) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn1(self.conv1(x)).relu()
        return (self.bn2(self.conv2(out)) + self.shortcut(x)).relu()


class CifarResNet18(nn.Module):
    """ResNet-18 for small images: a 3x3 stride-1 stem without max-pool, then 4 stages of 2 basic blocks."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], width, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, c_in = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            c_out = width * 2 ** i
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):  # x: [B, C, H, W]
        x = self.bn1(self.conv1(x)).relu()
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))  # global average pool -> [B, 8 * width]


def mini_vit(input_shape: Sequence[int], num_classes: int, patch: int = 7, width: int = 64, depth: int = 4,
             heads: int = 4, mlp_ratio: float = 4.0) -> nn.Module:
    """A small vision transformer (timm's VisionTransformer class, randomly initialised): on 28x28 digits 16
    patches of 7x7, width 64, 4 blocks, about 0.2M parameters. A transformer whose attention (`blocks.N.attn.qkv`)
    LoRA adapters can adapt on a CPU, where timm's vit_tiny (5M) is too slow."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(img_size=tuple(input_shape[1:]), patch_size=patch, in_chans=input_shape[0],
                             num_classes=num_classes, embed_dim=width, depth=depth, num_heads=heads,
                             mlp_ratio=mlp_ratio)


def timm_model(name: str) -> Callable[..., nn.Module]:
    """A factory for timm architecture `name`, randomly initialised (no weight download), sized to the data:
    `in_chans` and `num_classes`, and the image size where the architecture takes one (a ViT's patch grid)."""

    def build(input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
        import timm  # slow to import: only when a timm model is built

        def create(**sized) -> nn.Module:
            return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=input_shape[0],
                                     **sized, **kwargs)

        if len(input_shape) != 3 or "img_size" in kwargs:
            return create()
        try:
            return create(img_size=tuple(input_shape[1:]))
        except TypeError as e:  # timm has no list of the architectures that take an image size: ask the class
            if "img_size" not in str(e):
                raise
            return create()

    return build


def is_timm_model(name: str) -> bool:
    """Whether `name` is one of timm's architectures (timm is imported only to answer this)."""
    import timm

    return timm.is_model(name)


MODEL_ARGUMENTS = ("input_shape", "num_classes")  # what a factory is given from the data, never from model.kwargs
MODELS: dict[str, Callable[..., nn.Module]] = {
    "convnet1d": ConvNet1d,
    "mlp": MLP,
    "convnet3": ConvNet3,
    "cifar_resnet18": CifarResNet18,
    "mini_vit": mini_vit,
    "resnet18": timm_model("resnet18"),
    "resnet50": timm_model("resnet50"),
    "vit_tiny_patch16_224": timm_model("vit_tiny_patch16_224"),
    "convnext_tiny": timm_model("convnext_tiny"),
}


def model_factory(name: str) -> Callable[..., nn.Module]:
    """The factory `name` stands for: a registry entry, a factory of your own ("package.module:factory") or a timm
    architecture; a ConfigError for anything else."""
    if name in MODELS:
        return MODELS[name]
    if is_import_path(name):
        return resolve(name, "model.name")
    if is_timm_model(name):
        return timm_model(name)
    raise ConfigError(f"model.name={name!r} is not known: choose one of {', '.join(sorted(MODELS))}, any timm "
                      "architecture, or a factory of your own as package.module:factory")


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **kwargs) -> nn.Module:
    """Instantiate architecture `name` (see `model_factory`) for inputs of `input_shape` (without the batch dim)."""
    if is_import_path(name):
        return build_imported_model(name, tuple(input_shape), num_classes, **kwargs)
    return model_factory(name)(tuple(input_shape), num_classes, **kwargs)


def input_problem(name: str, kwargs: dict, input_shape: Sequence[int]) -> str | None:
    """Why model `name` cannot take one input of `input_shape` (too small for its poolings, say), or None.

    One example through the model on the meta device: no memory, no data. An op the meta device lacks tells
    nothing (None): the real model will.
    """
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "zero-element tensors": the error returned says it better
            build_model(name, input_shape, 2, **kwargs).eval()(torch.zeros(1, *input_shape))
    except NotImplementedError:
        return None
    except ConfigError:  # the factory of an import path failed: its own one-line error says why
        raise
    except (RuntimeError, ValueError, ZeroDivisionError, IndexError, AssertionError) as e:
        return (str(e).strip().splitlines() or [type(e).__name__])[0]
    return None
