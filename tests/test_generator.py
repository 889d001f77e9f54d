import pytest
import torch

from pdiff.config import load_config
from pdiff.errors import ArtifactError
from pdiff.generator import ParameterGenerator
from pdiff.params import ParamSpec
from tests.conftest import tiny_config

SPEC = ParamSpec(("a.weight", "a.bias"), ((6,), (4,)))


def checkpoints(k: int = 16) -> torch.Tensor:
    """K vectors scattered around a fixed centre, with different scales per tensor."""
    g = torch.Generator().manual_seed(0)
    centre = torch.cat([torch.ones(6), torch.full((4,), -3.0)])
    return centre + 0.05 * torch.randn(k, 10, generator=g)


@pytest.fixture(scope="module")
def fitted() -> ParameterGenerator:
    return ParameterGenerator(SPEC, tiny_config().train).fit(checkpoints(), progress=False)


def test_samples_have_the_right_shape_and_scale(fitted) -> None:
    samples = fitted.sample(8, sampler="ddim", steps=10)
    assert samples.shape == (8, 10) and torch.isfinite(samples).all()
    centre = checkpoints().mean(0)
    assert (samples - centre).abs().mean() < 0.5  # near the checkpoints, not at the origin
    assert fitted.sample_latents(3, "ddim", 10).shape == (3, 8)


def test_reconstruction_is_close(fitted) -> None:
    params = checkpoints()
    assert (fitted.reconstruct(params) - params).abs().mean() < 0.1


def test_same_seed_same_samples(fitted) -> None:
    a = fitted.sample(4, sampler="ddim", steps=10, seed=3)
    assert torch.equal(a, fitted.sample(4, sampler="ddim", steps=10, seed=3))
    assert not torch.equal(a, fitted.sample(4, sampler="ddim", steps=10, seed=4))


def test_save_load_round_trip(fitted, tmp_path) -> None:
    fitted.save(tmp_path)
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert torch.equal(loaded.sample(4, "ddim", 10, seed=1), fitted.sample(4, "ddim", 10, seed=1))


def test_load_for_another_subset_is_refused(fitted, tmp_path) -> None:
    fitted.save(tmp_path)
    with pytest.raises(ArtifactError, match="another parameter subset"):
        ParameterGenerator.load(tmp_path, spec=ParamSpec(("b",), ((10,),)))


def test_wrong_width_is_refused() -> None:
    gen = ParameterGenerator(SPEC, load_config("mnist1d-convnet").train)
    with pytest.raises(ValueError, match=r"\[K, 10\]"):
        gen.fit(torch.zeros(4, 7), progress=False)


@pytest.fixture(scope="module")
def fitted_tokens() -> ParameterGenerator:
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=2", "train.autoencoder.kwargs={hidden: 32, token_size: 4}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2}")
    return ParameterGenerator(SPEC, config.train).fit(checkpoints(), progress=False)


def test_tokens_generator_samples_saves_and_loads(fitted_tokens, tmp_path) -> None:
    assert fitted_tokens.latent_shape == (3, 2)  # 6 + 4 numbers in tokens of 4: 2 + 1 tokens
    assert fitted_tokens.encode(checkpoints()).shape == (16, 3, 2)
    samples = fitted_tokens.sample(8, sampler="ddim", steps=10)
    assert samples.shape == (8, 10) and torch.isfinite(samples).all()
    assert (samples - checkpoints().mean(0)).abs().mean() < 0.5
    fitted_tokens.save(tmp_path)
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert torch.equal(loaded.sample(4, "ddim", 10, seed=1), fitted_tokens.sample(4, "ddim", 10, seed=1))
