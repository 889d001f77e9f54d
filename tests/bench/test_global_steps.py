import torch
from bench.global_steps import N_MODELS, measure_steps

from pdiff.generator import ParameterGenerator
from pdiff.pipeline import run_pipeline
from tests.conftest import tiny_config

TOKENS = ("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer", "train.autoencoder.latent_dim=2",
          "train.autoencoder.kwargs={hidden: 32, token_size: 16, global_dim: 2}",
          "train.diffusion.kwargs={width: 32, depth: 2, heads: 2}", "train.diffusion.global_steps=20")


def test_each_step_count_retrains_only_the_global_denoiser(tmp_path) -> None:
    """measure_steps retrains the factorised prior's global denoiser by its public API and keeps the transformer."""
    run = run_pipeline(tiny_config(*TOKENS), tmp_path, progress=False)
    gen = ParameterGenerator.load(run.stage_dir("train"))
    transformer = {k: v.clone() for k, v in gen.prior.rest.denoiser.state_dict().items()}
    rows = measure_steps(run, gen, [5, 10])
    assert [r["steps"] for r in rows] == [5, 10] and all(0 <= r["inside"] <= N_MODELS for r in rows)
    assert [m["step"] for m in gen.prior.global_metrics] == [0, 4, 0, 9]  # two fresh runs of 5 and 10 steps
    assert all(torch.equal(v, transformer[k]) for k, v in gen.prior.rest.denoiser.state_dict().items())
