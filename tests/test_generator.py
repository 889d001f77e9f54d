import pytest
import torch

from pdiff.checkpoints import CheckpointSet
from pdiff.diffusion import sample
from pdiff.errors import ArtifactError, ConfigError, TrainingError
from pdiff.generator import AUTOENCODER_FILE, ParameterGenerator, quick_config
from pdiff.params import ParamSpec
from pdiff.presets import load_config
from pdiff.priors import factorised
from pdiff.store import load_tensors, save_tensors
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


# ---- conditioned on accuracy ------------------------------------------------------------------------------------
def labelled_clusters(k: int = 32) -> CheckpointSet:
    """Two clusters of checkpoints: those near +1 have val accuracy 0.95, those near -1 have 0.90."""
    g = torch.Generator().manual_seed(0)
    good = torch.arange(k) % 2 == 0
    params = torch.where(good[:, None], 1.0, -1.0) + 0.05 * torch.randn(k, 10, generator=g)
    return CheckpointSet(params, SPEC, val_accuracy=torch.where(good, 0.95, 0.90))


@pytest.fixture(scope="module")
def conditioned() -> ParameterGenerator:
    config = tiny_config("train.diffusion.condition=accuracy", "train.diffusion.p_uncond=0.2",
                         "train.autoencoder.steps=300", "train.diffusion.steps=1500",
                         "train.diffusion.kwargs={width: 64, depth: 2}").train
    return ParameterGenerator(SPEC, config).fit(labelled_clusters(), progress=False)


@pytest.mark.parametrize("guidance", [0.0, 2.0])
def test_a_target_accuracy_draws_from_the_checkpoints_that_had_it(conditioned, guidance: float) -> None:
    for target, side in (("max", 1.0), ("min", -1.0), (0.95, 1.0)):
        samples = conditioned.sample(20, "ddim", 20, target=target, guidance=guidance)
        assert (samples.mean(1) * side > 0).float().mean() >= 0.8, target  # in the cluster of that accuracy
    both = conditioned.sample(40, "ddim", 20).mean(1)  # no target: the unconditional model
    assert (both > 0.5).sum() > 5 and (both < -0.5).sum() > 5


def test_targets_resolve_against_the_training_accuracies(conditioned) -> None:
    accuracies = labelled_clusters().val_accuracy
    assert torch.equal(conditioned.prior.accuracies, accuracies)
    assert conditioned.target_accuracy("max") == pytest.approx(0.95)
    assert conditioned.target_accuracy("min") == pytest.approx(0.90)
    assert conditioned.target_accuracy("median") == pytest.approx(0.925)  # q50 interpolates: 16 of each
    assert conditioned.target_accuracy("q75") == pytest.approx(torch.quantile(accuracies.double(), 0.75).item())
    assert conditioned.target_accuracy("0.97") == conditioned.target_accuracy(0.97) == 0.97
    assert conditioned.prior.standardise_accuracy(torch.tensor([0.925])).item() == pytest.approx(0.0, abs=1e-5)


def test_conditioned_save_load_round_trip(conditioned, tmp_path) -> None:
    conditioned.save(tmp_path)
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert loaded.prior.conditioned and torch.equal(loaded.prior.accuracies, conditioned.prior.accuracies)
    assert torch.equal(loaded.sample(4, "ddim", 10, seed=1, target="max", guidance=1.0),
                       conditioned.sample(4, "ddim", 10, seed=1, target="max", guidance=1.0))


@pytest.mark.parametrize(("target", "message"), [
    ("best", r"'best' is not a target.*min, median, max, qNN"),
    (1.5, r"outside \[0, 1\].*fraction"),
    ("-0.1", r"outside \[0, 1\]"),
    ("q101", "q0 to q100"),
])
def test_bad_targets_are_refused(conditioned, target, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        conditioned.sample(2, "ddim", 5, target=target)


def test_guidance_needs_a_target(conditioned) -> None:
    with pytest.raises(ConfigError, match="give a target"):
        conditioned.sample(2, "ddim", 5, guidance=1.0)
    with pytest.raises(ConfigError, match="0 or more"):
        conditioned.sample(2, "ddim", 5, target="max", guidance=-1.0)


def test_a_target_on_an_unconditioned_generator_is_refused(fitted) -> None:
    assert not fitted.prior.conditioned and fitted.prior.accuracies is None
    assert not any(k.startswith("condition.") for k in fitted.prior.denoiser.state_dict())  # the paper's network
    with pytest.raises(ConfigError, match="trained without a condition.*condition=accuracy"):
        fitted.sample(2, "ddim", 5, target="max")


def test_conditioning_needs_accuracies() -> None:
    config = tiny_config("train.diffusion.condition=accuracy").train
    with pytest.raises(TrainingError, match="validation accuracy"):
        ParameterGenerator(SPEC, config).fit(checkpoints(), progress=False)  # bare vectors: no accuracies
    same = CheckpointSet(checkpoints(), SPEC, val_accuracy=torch.full((16,), 0.9))
    with pytest.raises(TrainingError, match="same validation accuracy.*condition=none"):
        ParameterGenerator(SPEC, config).fit(same, progress=False)


@pytest.fixture(scope="module")
def fitted_tokens() -> ParameterGenerator:
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=2",
                         "train.autoencoder.kwargs={hidden: 32, token_size: 4, global_dim: 2}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2}")
    return ParameterGenerator(SPEC, config.train).fit(checkpoints(), progress=False)


def test_tokens_generator_samples_saves_and_loads(fitted_tokens, tmp_path) -> None:
    assert fitted_tokens.latent_shape == (4, 2)  # a global token, then 6 + 4 numbers in tokens of 4: 2 + 1 tokens
    assert fitted_tokens.encode(checkpoints()).shape == (16, 4, 2)
    assert fitted_tokens.latent_scale.shape == (4, 1)  # one scale a token: the global one varies most
    samples = fitted_tokens.sample(8, sampler="ddim", steps=10)
    # Finite, not near the checkpoints: the decoder follows its latents, and 150 steps leave the tiny transformer
    # far from the latents' distribution (bench.whole_networks measures the samples' quality).
    assert samples.shape == (8, 10) and torch.isfinite(samples).all()
    fitted_tokens.save(tmp_path)
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert torch.equal(loaded.sample(4, "ddim", 10, seed=1), fitted_tokens.sample(4, "ddim", 10, seed=1))


def test_a_global_denoiser_draws_the_global_latent_and_is_saved(tmp_path) -> None:
    """train.diffusion.global_steps: an MLP denoiser of its own learns the global latent (its steps logged as
    "global diffusion"), samples are drawn through it, and it is saved with the diffusion model and loaded back."""
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=2",
                         "train.autoencoder.kwargs={hidden: 32, token_size: 4, global_dim: 2}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2}",
                         "train.diffusion.global_steps=50").train
    gen = ParameterGenerator(SPEC, config)
    drawn = []
    gen.prior.global_denoiser.register_forward_hook(lambda m, a, out: drawn.append(out.shape))
    gen.fit(checkpoints(), progress=False)
    assert {"global diffusion", "diffusion"} <= {m["network"] for m in gen.metrics}
    assert drawn[-1] == (16, 2)  # trained on [batch, G * c]: all 16 checkpoints' one global token of 2 channels
    samples = gen.sample(8, sampler="ddim", steps=10)
    assert samples.shape == (8, 10) and torch.isfinite(samples).all() and drawn[-1] == (8, 2)
    # the global token of a sample is what the global denoiser's full DDPM chain drew, whatever the sampler
    z = gen.sample_latents(4, "ddim", 10, seed=3)
    drawn_alone = sample(gen.prior.global_denoiser, gen.prior.schedule, 4, 2, "ddpm",
                         generator=torch.Generator().manual_seed(3))
    assert torch.allclose(z[:, :1], drawn_alone[:, None] * gen.latent_scale[:1] + gen.latent_mean[:1], atol=1e-6)
    gen.save(tmp_path)
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert torch.equal(loaded.sample(4, "ddim", 10, seed=1), gen.sample(4, "ddim", 10, seed=1))
    assert torch.equal(loaded.prior.global_denoiser.proj_in.weight, gen.prior.global_denoiser.proj_in.weight)


@pytest.mark.parametrize("crop", [0, 2])
def test_with_a_global_denoiser_the_transformer_learns_the_rest_given_the_clean_global_token(crop: int, monkeypatch
                                                                                           ) -> None:
    """The transformer's loss (on the whole sequence or on crops) gets the global token clean and unscored; the
    global denoiser's is the plain loss on the flat global latent."""
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=2",
                         "train.autoencoder.kwargs={hidden: 32, token_size: 2, global_dim: 2}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2, window: 2}",
                         f"train.diffusion.tokens_per_step={crop}", "train.diffusion.global_steps=5",
                         "train.diffusion.steps=5").train
    gen = ParameterGenerator(SPEC, config)
    calls, plain, given = [], factorised.denoising_loss, factorised.clean_prefix_loss

    def recorded_plain(schedule, denoiser, x0, generator):
        calls.append((tuple(x0.shape), 0))
        return plain(schedule, denoiser, x0, generator)

    def recorded_given(schedule, denoiser, x0, prefix, generator):
        calls.append((tuple(x0.shape), prefix))
        return given(schedule, denoiser, x0, prefix, generator)

    monkeypatch.setattr(factorised, "denoising_loss", recorded_plain)
    monkeypatch.setattr(factorised, "clean_prefix_loss", recorded_given)
    gen.fit(checkpoints(), progress=False)
    assert calls[:5] == [((16, 2), 0)] * 5  # the global denoiser: [K, G * c]
    assert calls[5:] == [((16, 1 + (crop or 5), 2), 1)] * 5  # the transformer: the global token clean


def test_a_global_denoiser_needs_a_global_latent() -> None:
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.kwargs={token_size: 4, global_dim: 2}").train
    config.diffusion.global_steps = 10
    config.autoencoder.kwargs = {"token_size": 4}
    with pytest.raises(ConfigError, match="global_steps=10 trains a denoiser for the global latent"):
        ParameterGenerator(SPEC, config)


def test_tokens_generator_trains_on_crops() -> None:
    """With tokens_per_step each step codes only its crop: the autoencoder's networks see [b, 2, token_size],
    the denoiser [b, 2, c]; the generator still reconstructs the checkpoints and samples whole vectors."""
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=2",
                         "train.autoencoder.kwargs={hidden: 32, token_size: 2, global_dim: 2}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2, window: 2}",
                         "train.autoencoder.tokens_per_step=2", "train.diffusion.tokens_per_step=2").train
    gen = ParameterGenerator(SPEC, config)
    seen = {"ae": set(), "dm": set()}
    gen.autoencoder.encoder_in.register_forward_hook(lambda m, a, out: seen["ae"].add(out.shape[1]))
    gen.prior.denoiser.proj_in.register_forward_hook(lambda m, a, out: seen["dm"].add(out.shape[1]))
    gen.fit(checkpoints(), progress=False)
    assert gen.latent_shape == (6, 2)  # a global token, then 6 + 4 numbers in tokens of 2
    # crops in training (the denoiser's with the global token), the whole sequence to encode the checkpoints
    assert seen == {"ae": {2, 5}, "dm": {3}}
    params = checkpoints()
    assert (gen.reconstruct(params) - params).abs().mean() < 0.1
    assert torch.isfinite(gen.sample(8, "ddim", 10)).all()


def test_ema_decay_zero_samples_the_raw_weights() -> None:
    """ema_decay=0 keeps the trained denoiser itself; any other decay replaces it by its average."""
    for decay, raw in ((0.0, True), (0.9, False)):
        gen = ParameterGenerator(SPEC, tiny_config(f"train.diffusion.ema_decay={decay}").train)
        trained = gen.prior.denoiser
        gen.fit(checkpoints(), progress=False)
        assert (gen.prior.denoiser is trained) == raw


def test_deviation_standardisation_is_fitted_saved_and_loaded(tmp_path) -> None:
    """train.autoencoder.standardise=deviation: the autoencoder sees the checkpoints' differences from their mean
    at unit scale, and a loaded generator de-standardises its samples with the same statistics."""
    params = checkpoints()
    gen = ParameterGenerator(SPEC, tiny_config("train.autoencoder.standardise=deviation").train)
    gen.fit(params, progress=False)
    assert torch.allclose(gen.normalizer.mean, params.mean(0))
    assert torch.allclose(gen.normalizer.normalize(params).pow(2).mean(), torch.tensor(1.0), atol=1e-4)
    gen.save(tmp_path)
    loaded = ParameterGenerator.load(tmp_path, spec=SPEC)
    assert loaded.config.autoencoder.standardise == "deviation"
    assert torch.equal(loaded.normalizer.mean, gen.normalizer.mean)
    assert torch.equal(loaded.sample(4, "ddim", 10, seed=1), gen.sample(4, "ddim", 10, seed=1))


def test_raw_latents_are_not_standardised() -> None:
    gen = ParameterGenerator(SPEC, tiny_config("train.diffusion.standardise_latents=false").train)
    gen.fit(checkpoints(), progress=False)
    assert torch.equal(gen.latent_mean, torch.zeros(8)) and gen.latent_scale == 1
    assert torch.isfinite(gen.sample(4, sampler="ddim", steps=10)).all()


def test_a_tokens_generator_without_the_per_token_maps_is_one_line_error(fitted_tokens, tmp_path) -> None:
    """A tokens generator saved before the autoencoder had per-token bases: one line naming the fix."""
    fitted_tokens.save(tmp_path)
    tensors, metadata = load_tensors(tmp_path / AUTOENCODER_FILE)
    save_tensors(tmp_path / AUTOENCODER_FILE, {k: v for k, v in tensors.items() if "basis" not in k}, metadata)
    with pytest.raises(ArtifactError, match="do not fit the saved architecture.*train --force") as error:
        ParameterGenerator.load(tmp_path, spec=SPEC)
    assert "\n" not in str(error.value) and "encoder_basis" in str(error.value)


def test_a_seed_torch_cannot_take_is_one_line(fitted) -> None:
    """The library checks sampling seeds as the command line does (torch seeds are 64-bit)."""
    for seed in (2**64, -1):
        with pytest.raises(ConfigError, match=rf"seed={seed} is not a 64-bit seed: give a whole number"):
            fitted.sample_latents(2, "ddim", 5, seed=seed)


def test_without_a_config_the_generator_is_the_cpu_presets() -> None:
    """The library's default trains in about a minute on a CPU core at small D (BENCHMARKS.md, "Generator
    training"), not the paper's 30,000 + 30,000 conv1d steps; presets keep their own (their hashes are pinned)."""
    gen = ParameterGenerator(SPEC)
    assert gen.config == quick_config() == load_config("mnist1d-convnet").train
    assert (gen.config.autoencoder.arch, gen.config.diffusion.arch) == ("mlp", "mlp")
    assert (gen.config.autoencoder.steps, gen.config.diffusion.steps) == (2000, 3000)


def test_fit_warns_with_the_fix_when_reconstructions_lose_the_differences(caplog) -> None:
    config = tiny_config("train.autoencoder.steps=1", "train.diffusion.steps=1").train
    ParameterGenerator(SPEC, config).fit(checkpoints(), progress=False)
    assert "reconstructions keep only" in caplog.text and "more autoencoder.steps" in caplog.text
