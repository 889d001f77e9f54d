from dataclasses import dataclass, field

import pytest
import torch
from torch import nn

from pdiff.config import Config
from pdiff.denoisers import DENOISERS
from pdiff.errors import ConfigError
from pdiff.presets import load_config
from pdiff.rules import check_fields, each_of, ensure, positive, setting


class ToyDenoiser(nn.Module):
    """A denoiser of flat latents that takes no condition: its registry entry's attributes are all that the config
    checks learn about it."""

    latent, takes_condition = "flat", False

    def __init__(self, dim: int, width: int = 8):
        super().__init__()
        self.net = nn.Linear(dim, width)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x


def test_a_new_denoiser_is_checked_by_its_registry_attributes(monkeypatch) -> None:
    monkeypatch.setitem(DENOISERS, "toy", ToyDenoiser)
    toy = ["train.diffusion.arch=toy"]
    assert load_config("mnist1d-convnet", [*toy, "train.diffusion.kwargs={width: 4}"]).train.diffusion.arch == "toy"
    with pytest.raises(ConfigError, match="the toy denoiser takes no condition yet; use the mlp or conv1d denoiser"):
        load_config("mnist1d-convnet", [*toy, "train.diffusion.condition=accuracy"])
    with pytest.raises(ConfigError, match="train.diffusion.kwargs has 'depth', which ToyDenoiser does not take"):
        load_config("mnist1d-convnet", [*toy, "train.diffusion.kwargs={depth: 2}"])
    with pytest.raises(ConfigError, match="token latents.*need a token denoiser"):
        load_config("mnist1d-convnet", [*toy, "train.autoencoder.arch=tokens"])
    with pytest.raises(ConfigError, match="tokens_per_step=8 crops token sequences.*or use arch transformer"):
        load_config("mnist1d-convnet", [*toy, "train.diffusion.tokens_per_step=8"])


@dataclass
class Inner:
    low: int = setting(1, positive())
    high: int = setting(2, ensure(lambda v, c: v >= c.inner.low, "{key}={value} is below inner.low={c.inner.low}"))


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)  # a nested section: its fields' rules run too
    names: list[str] = setting(["a"], each_of(("a", "b")))


def test_rules_run_in_field_order_with_dotted_keys() -> None:
    check_fields(Outer(), Outer())
    with pytest.raises(ConfigError, match=r"^inner.low=0 must be positive: set it to 1 or more$"):
        check_fields(Outer(Inner(low=0, high=-1)), Outer(Inner(low=0, high=-1)))  # low's rule comes first
    with pytest.raises(ConfigError, match=r"^inner.high=1 is below inner.low=2$"):
        check_fields(Outer(Inner(low=2, high=1)), Outer(Inner(low=2, high=1)))
    with pytest.raises(ConfigError, match=r"^names: unknown 'c': choose from a, b$"):
        check_fields(Outer(names=["a", "c"]), Outer(names=["a", "c"]))


def test_a_list_default_is_copied_for_every_config() -> None:
    first, second = Config(), Config()
    first.collect.subset.append("all")
    assert second.collect.subset == ["last_norm:2"]
