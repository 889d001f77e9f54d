"""The latent-prior seam: the registry, "auto", and a new family that is one class and one registry entry."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from pdiff.errors import ConfigError
from pdiff.generator import DIFFUSION_FILE, ParameterGenerator
from pdiff.params import ParamSpec
from pdiff.presets import load_config
from pdiff.priors import PRIORS, build_prior, register_prior
from pdiff.priors.factorised import FactorisedPrior
from pdiff.priors.flat import FlatPrior
from pdiff.priors.tokens import TokenPrior, token_loss_weights
from pdiff.store import load_tensors
from tests.conftest import tiny_config

SPEC = ParamSpec(("a.weight", "a.bias"), ((6,), (4,)))
TOKENS = ("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer", "train.autoencoder.latent_dim=2",
          "train.autoencoder.kwargs={hidden: 32, token_size: 4, global_dim: 2}",
          "train.diffusion.kwargs={width: 32, depth: 2, heads: 2}")


@register_prior("gaussian")
class GaussianPrior:
    """A toy family: each latent coordinate an independent Gaussian, fitted by its mean and spread."""

    conditioned = False

    def __init__(self, latent_shape: tuple[int, ...], global_tokens: int, config, device: torch.device, seed: int):
        self.latent_shape, self.device = latent_shape, device
        self.mean, self.std = torch.zeros(latent_shape), torch.ones(latent_shape)
        self.metrics: list[dict] = []

    def fit(self, z: Tensor, condition: Tensor | None = None, progress: bool = True) -> None:
        self.mean, self.std = z.mean(0).cpu(), z.std(0).cpu()
        self.metrics.append({"network": "gaussian", "step": 0, "loss": 0.0})

    def sample(self, n: int, sampler: str, steps: int | None, generator: torch.Generator,
               condition: float | None = None, guidance: float = 0.0, progress: bool = False) -> Tensor:
        noise = torch.randn((n, *self.latent_shape), generator=generator)
        return (self.mean + self.std * noise).to(self.device)

    def state_dict(self) -> dict[str, Tensor]:
        return {"gaussian.mean": self.mean, "gaussian.std": self.std}

    def load_state_dict(self, tensors: dict[str, Tensor]) -> None:
        self.mean, self.std = tensors["gaussian.mean"], tensors["gaussian.std"]


def checkpoints(k: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.ones(6), torch.full((4,), -3.0)]) + 0.05 * torch.randn(k, 10, generator=g)


def test_a_registered_family_is_a_config_choice_and_fits_samples_saves_and_loads(tmp_path) -> None:
    config = load_config("mnist1d-convnet", ["train.diffusion.prior=gaussian", "train.autoencoder.steps=150",
                                              "train.autoencoder.kwargs={hidden: 64}"])
    gen = ParameterGenerator(SPEC, config.train).fit(checkpoints(), progress=False)
    assert isinstance(gen.prior, GaussianPrior) and gen.metrics[-1]["network"] == "gaussian"
    samples = gen.sample(8, seed=1)
    assert samples.shape == (8, 10) and (samples - checkpoints().mean(0)).abs().mean() < 0.5
    gen.save(tmp_path)
    assert {"gaussian.mean", "gaussian.std", "latent_mean"} <= set(load_tensors(tmp_path / DIFFUSION_FILE)[0])
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert isinstance(loaded.prior, GaussianPrior)
    assert torch.equal(loaded.sample(4, seed=2), gen.sample(4, seed=2))


def test_a_name_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_prior("flat")(GaussianPrior)
    assert PRIORS["flat"] is FlatPrior


@pytest.mark.parametrize(("overrides", "family"), [
    ((), FlatPrior), (TOKENS, TokenPrior), ((*TOKENS, "train.diffusion.global_steps=5"), FactorisedPrior)])
def test_auto_picks_the_ddpm_prior_that_fits_the_latents(overrides: tuple[str, ...], family: type) -> None:
    assert type(ParameterGenerator(SPEC, tiny_config(*overrides).train).prior) is family


@pytest.mark.parametrize(("overrides", "message"), [
    (("train.diffusion.prior=tokens",), r"prior=tokens draws token latents \[T, c\].*prior=auto"),
    ((*TOKENS, "train.diffusion.prior=flat"), r"prior=flat draws flat latents \[d\].*prior=auto"),
    ((*TOKENS, "train.diffusion.prior=tokens", "train.diffusion.global_steps=5"),
     "global_steps=5 trains the factorised prior's global denoiser, not the tokens prior's"),
    ((*TOKENS, "train.diffusion.prior=factorised"), "global_steps steps: set global_steps above 0"),
])
def test_a_prior_that_does_not_fit_the_latents_is_one_line_error(overrides: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        ParameterGenerator(SPEC, tiny_config(*overrides).train)
    assert "\n" not in str(error.value)


def test_an_unknown_prior_is_refused() -> None:
    config = tiny_config().train
    config.diffusion.prior = "nope"
    with pytest.raises(ConfigError, match="prior='nope' is not known: choose one of auto"):
        build_prior((8,), 0, config.diffusion, torch.device("cpu"), 0)


def test_token_loss_weights_give_the_global_tokens_half() -> None:
    weights = token_loss_weights(1 + 4, 1)
    assert weights.tolist() == [0.5, 0.125, 0.125, 0.125, 0.125]
    assert token_loss_weights(2 + 8, 2).sum().item() == pytest.approx(1.0)
