import pytest
import torch

from pdiff.tasks.models import MODELS, build_model

SHAPES = {"convnet1d": (1, 40), "mlp": (1, 28, 28), "convnet3": (1, 28, 28)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_models_classify_their_inputs(name: str) -> None:
    model = build_model(name, SHAPES[name], 10)
    assert model(torch.randn(3, *SHAPES[name])).shape == (3, 10)
    assert any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_default_convnet1d_is_about_8k_parameters() -> None:
    model = build_model("convnet1d", (1, 40), 10)
    assert 7000 < sum(p.numel() for p in model.parameters()) < 9000


def test_unknown_model() -> None:
    with pytest.raises(ValueError, match="convnet3"):
        build_model("resnet1000", (1, 28, 28), 10)
