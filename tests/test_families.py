import pytest
import torch

from pdiff.config import AutoencoderConfig, DiffusionConfig, TrainConfig
from pdiff.errors import ConfigError
from pdiff.families import Projection
from pdiff.generator import ParameterGenerator
from pdiff.params import ParamSpec
from pdiff.presets import load_config
from pdiff.pretrained import GENERATOR, read_export
from pdiff.priors.flow import FlowPrior

SPEC = ParamSpec(("layer.weight", "layer.bias"), ((2, 2), (2,)))  # D = 6


def flow_config(rank: int, steps: int = 1200) -> TrainConfig:
    return TrainConfig(AutoencoderConfig(latent_dim=rank), DiffusionConfig(
        arch="mlp", kwargs={"width": 64, "depth": 2}, steps=steps, batch_size=4, lr=3e-3, ema_decay=0), family="flow")


@pytest.fixture(scope="module")
def vectors() -> torch.Tensor:
    """Four vectors [4, 6], far apart, on a different scale per coordinate."""
    g = torch.Generator().manual_seed(0)
    return 3 * torch.randn(4, 6, generator=g) * torch.tensor([1.0, 2, 3, 1, 1, 1]) + 4


@pytest.fixture(scope="module")
def fitted(vectors) -> ParameterGenerator:
    torch.manual_seed(0)
    return ParameterGenerator(SPEC, flow_config(rank=3)).fit(vectors, progress=False)


def test_a_projection_keeps_the_vectors_it_was_fitted_on() -> None:
    x = torch.randn(5, 8, dtype=torch.float64)
    pca, identity = Projection(8, 4), Projection(8, 8)
    pca.double().fit(x)
    identity.fit(x)
    assert pca.latent_shape == (4,) and identity.latent_shape == (8,)
    torch.testing.assert_close(pca.decode(pca.encode(x)), x)  # 5 vectors span 4 axes about their mean
    assert torch.equal(identity.encode(x), x)
    assert torch.allclose(pca.axes @ pca.axes.T, torch.eye(4, dtype=torch.float64))


def test_the_flow_family_overfits_a_handful_of_vectors(fitted, vectors) -> None:
    assert isinstance(fitted.prior, FlowPrior) and isinstance(fitted.autoencoder, Projection)
    spacing = torch.cdist(vectors, vectors).fill_diagonal_(float("inf")).min(1).values.median()
    for sampler in ("euler", "midpoint"):
        samples = fitted.sample(40, sampler=sampler, seed=1)
        nearest = torch.cdist(samples, vectors).min(1)
        assert nearest.values.median() < 0.15 * spacing  # each sample lands on a training vector
        assert len(nearest.indices.unique()) >= 3  # and not all on one
    assert torch.equal(fitted.sample(3, sampler="euler", seed=2), fitted.sample(3, sampler="euler", seed=2))


def test_a_flow_needs_a_flow_sampler(fitted) -> None:
    with pytest.raises(ConfigError, match="euler or midpoint"):
        fitted.sample(2, sampler="ddpm")
    with pytest.raises(ConfigError, match="generate.sampler to euler or midpoint"):
        load_config("mnist1d-mlp-full", ["train.family=flow"])
    with pytest.raises(ConfigError, match="flat network"):
        load_config("mnist-mlp-full", ["train.family=flow", "generate.sampler=euler"])
    assert load_config("mnist1d-mlp-full", ["train.family=flow", "generate.sampler=midpoint"]).train.family == "flow"


def test_a_flow_on_a_token_preset_needs_only_a_flat_velocity_network() -> None:
    """The flow trains no autoencoder: the preset's tokens autoencoder is left as it is, unchecked."""
    flow = ["train.family=flow", "generate.sampler=euler", "train.diffusion.arch=mlp",
            "train.diffusion.kwargs={width: 32, depth: 2}"]
    with pytest.raises(ConfigError, match="global_steps=10000 trains a denoiser for a global latent, which "
                                          "train.family=flow has none of: set train.diffusion.global_steps=0"):
        load_config("mnist-convnet3-full", flow)
    config = load_config("mnist-convnet3-full", [*flow, "train.diffusion.global_steps=0"])
    assert config.train.autoencoder.arch == "tokens" and config.train.diffusion.arch == "mlp"
    with pytest.raises(ConfigError, match="token latents.*need a token denoiser"):  # latent diffusion: still checked
        load_config("mnist-convnet3-full", [*flow[2:], "train.diffusion.global_steps=0"])


def test_a_flow_generator_round_trips_save_load_and_the_hub_export(fitted, tmp_path) -> None:
    fitted.save(tmp_path / "run")
    loaded = ParameterGenerator.load(tmp_path / "run")
    assert loaded.config.family == "flow" and isinstance(loaded.prior, FlowPrior)
    expected = fitted.sample(5, sampler="midpoint", seed=3)
    torch.testing.assert_close(loaded.sample(5, sampler="midpoint", seed=3), expected)
    exported = fitted.save_pretrained(tmp_path / "export")
    assert read_export(exported, GENERATOR)["train"]["family"] == "flow"
    assert "flow-matching model" in (exported / "README.md").read_text()
    torch.testing.assert_close(ParameterGenerator.from_pretrained(exported).sample(5, sampler="midpoint", seed=3),
                               expected)


def test_latent_flow_matching_fits_an_autoencoders_latents(vectors) -> None:
    """train.diffusion.prior=flow with the latent-diffusion family: flow matching in the autoencoder's latents."""
    config = TrainConfig(AutoencoderConfig(arch="mlp", latent_dim=4, steps=50, kwargs={"hidden": 16}),
                         DiffusionConfig(arch="mlp", kwargs={"width": 32, "depth": 1}, steps=50, prior="flow"))
    gen = ParameterGenerator(SPEC, config).fit(vectors, progress=False)
    assert isinstance(gen.prior, FlowPrior) and gen.sample(3, sampler="euler", steps=4).shape == (3, 6)
