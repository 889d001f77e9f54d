import pytest
import torch

from pdiff.adapters import add_adapters
from pdiff.params import NORM_LAYERS, ParamSpec
from pdiff.presets import load_config, task_names
from pdiff.tasks.models import MODELS, build_model

SHAPES = {"convnet1d": (1, 40), "mlp": (1, 28, 28), "convnet3": (1, 28, 28), "cifar_resnet18": (3, 16, 16),
          "resnet18": (3, 32, 32), "resnet50": (1, 32, 32), "vit_tiny_patch16_224": (3, 32, 32),
          "convnext_tiny": (3, 32, 32), "mini_vit": (1, 28, 28)}
# The official code's default subset of each architecture (the last two normalization layers).
OFFICIAL_SUBSETS = {
    "cifar_resnet18": ["layer4.1.bn1", "layer4.1.bn2"], "resnet18": ["layer4.1.bn1", "layer4.1.bn2"],
    "resnet50": ["layer4.2.bn2", "layer4.2.bn3"], "vit_tiny_patch16_224": ["blocks.11.norm2", "norm"],
    "convnext_tiny": ["stages.3.blocks.2.norm", "head.norm"], "convnet3": ["features.2.1", "features.4.1"],
    "convnet1d": ["features.1.1", "features.2.1"], "mlp": ["net.5", "net.2"], "mini_vit": ["blocks.3.norm2", "norm"],
}
DATA_SHAPES = {"mnist1d": (1, 40), "mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "mnist-rot90": (1, 28, 28),
               "cifar10": (3, 32, 32),
               "cifar100": (3, 32, 32), "imagefolder": (3, 32, 32)}  # imagefolder: the cifar10-jpeg preset


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_classify_their_inputs(name: str) -> None:
    model = build_model(name, SHAPES[name], 7).eval()
    assert model(torch.randn(2, *SHAPES[name])).shape == (2, 7)
    assert any(isinstance(m, NORM_LAYERS) for m in model.modules())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_default_subset_is_the_official_one(name: str) -> None:
    model = build_model(name, SHAPES[name], 10)
    official = ParamSpec.select(model, OFFICIAL_SUBSETS[name])
    assert ParamSpec.select(model, "last_norm:2") == official
    assert len(official.names) == 4  # weight and bias of two layers


@pytest.mark.parametrize("task", task_names())
def test_preset_subset_is_the_last_two_norms_all_or_the_adapters(task: str) -> None:
    config = load_config(task)
    model = build_model(config.model.name, DATA_SHAPES[config.data.name], 10, **config.model.kwargs)
    if config.model.peft is not None:
        model = add_adapters(model, config.model.peft, config.seed)
    chosen = ParamSpec.select(model, config.collect.subset)
    expected = config.collect.subset[0] if config.collect.subset in (["all"], ["adapters"]) else "last_norm:2"
    assert chosen == ParamSpec.select(model, expected)


def test_default_convnet1d_is_about_8k_parameters() -> None:
    model = build_model("convnet1d", (1, 40), 10)
    assert 7000 < sum(p.numel() for p in model.parameters()) < 9000


def test_mini_vit_is_about_200k_parameters() -> None:
    model = build_model("mini_vit", (1, 28, 28), 10)
    assert 190_000 < sum(p.numel() for p in model.parameters()) < 220_000


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="convnet3"):
        build_model("resnet1000", (1, 28, 28), 10)
