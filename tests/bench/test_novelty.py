"""bench.novelty without runs: its official configuration is the named preset, and its CI and verdict helpers."""

import pytest
import torch

from bench import novelty
from pdiff.ablation import with_overrides
from pdiff.presets import load_config


def test_the_official_variant_is_the_official_preset() -> None:
    """The table's official row and `pdiff run mnist1d-convnet-official` train the same generator on the same
    checkpoints (one config hash up to the generator)."""
    official = load_config("mnist1d-convnet-official")
    variant = with_overrides(load_config("mnist1d-convnet"), novelty.OFFICIAL_ALL)
    assert official.train == variant.train
    assert (official.data, official.model, official.collect) == (variant.data, variant.model, variant.collect)


def test_mean_ci_holds_the_mean_and_narrows_with_more_models() -> None:
    g = torch.Generator().manual_seed(0)
    few, many = torch.randn(20, generator=g), torch.randn(2000, generator=g)
    mean, low, high = novelty.mean_ci(few)
    assert low < mean < high and mean == pytest.approx(few.mean().item())
    _, low_many, high_many = novelty.mean_ci(many)
    assert high_many - low_many < (high - low) / 5


@pytest.mark.parametrize("official, novel_is_low, expected", [
    (0.92, True, "within"), (0.80, True, "no"), (0.99, True, "beyond"), (0.80, False, "beyond"),
    (0.99, False, "no")])
def test_reaches_says_which_side_the_official_mean_lies(official, novel_is_low, expected) -> None:
    assert novelty.reaches((0.92, 0.90, 0.94), official, novel_is_low) == expected


def test_the_section_names_the_variants_left_out_and_why() -> None:
    assert novelty.not_run({}) == ""
    sentence = novelty.not_run({"conv": novelty.NOT_RUN["conv"]})
    assert sentence.startswith(" Not run: *conv* (") and "50 CPU minutes" in sentence


def test_the_official_layers_variants_change_only_the_layers() -> None:
    """official+k7, official+bn and official-layers are the official row with the official code's layers, and
    build (kernel 7 and BatchNorm fit pdiff's blocks); the denoiser keeps GroupNorm, as it keeps no running
    statistics to sample with."""
    official = with_overrides(load_config("mnist1d-convnet"), novelty.OFFICIAL_ALL)
    both = with_overrides(load_config("mnist1d-convnet"), novelty.VARIANTS["official-layers"][1])
    assert both.train.autoencoder.kwargs["kernel_size"] == 7 and both.train.autoencoder.kwargs["norm"] == "batch"
    assert both.train.diffusion.kwargs["kernel_size"] == 7 and "norm" not in both.train.diffusion.kwargs
    assert both.train.autoencoder.kwargs["channels"] == official.train.autoencoder.kwargs["channels"]
    assert (both.train.autoencoder.steps, both.train.diffusion.steps) == (500, 1000)
