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


def test_ema_decay_zero_samples_the_raw_weights() -> None:
    """ema_decay=0 keeps the trained denoiser itself; any other decay replaces it by its average."""
    for decay, raw in ((0.0, True), (0.9, False)):
        gen = ParameterGenerator(SPEC, tiny_config(f"train.diffusion.ema_decay={decay}").train)
        trained = gen.denoiser
        gen.fit(checkpoints(), progress=False)
        assert (gen.denoiser is trained) == raw


def test_raw_latents_are_not_standardised() -> None:
    gen = ParameterGenerator(SPEC, tiny_config("train.diffusion.standardise_latents=false").train)
    gen.fit(checkpoints(), progress=False)
    assert torch.equal(gen.latent_mean, torch.zeros(8)) and gen.latent_scale == 1
    assert torch.isfinite(gen.sample(4, sampler="ddim", steps=10)).all()
