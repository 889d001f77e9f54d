"""Stage 3, generate: noise -> diffusion -> decoder -> parameter vectors; and ready-to-load models (`pdiff sample`).

The stage writes generate/generated.safetensors: the generated params [N, D] and latents [N, d] ([N, T, c]
for token latents), and the latents of the original checkpoints [K, d] beside them, so that later stages never
open the generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import collect, train
from .diffusion import SAMPLERS
from .errors import ArtifactError, ConfigError
from .generator import ParameterGenerator
from .params import ParamSpec
from .store import load_tensors, save_tensors
from .tasks import Task

FOLDER = "generate"  # runs/<task>/generate/
GENERATED_FILE = "generated.safetensors"


@dataclass
class Generated:
    """The generated parameter vectors [N, D] with their latents [N, d], the latents of the checkpoints the
    generator was trained on [K - H, d] and of the held-out ones [H, d] (empty without train.holdout)."""

    params: torch.Tensor
    latents: torch.Tensor
    original_latents: torch.Tensor
    heldout_latents: torch.Tensor


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Sample generate.n vectors from the run's generator and write them into `out`."""
    collected = collect.load(task, run_dir)
    spec = collected.checkpoints.spec
    training, heldout = collected.checkpoints.split(task.config.train.holdout, task.config.train.holdout_split)
    gen = train.load(task, run_dir, spec)
    cfg = task.config.generate
    latents = gen.sample_latents(cfg.n, cfg.sampler, cfg.steps, seed=task.config.seed, progress=task.progress)
    params = gen.decode(latents)
    if not torch.isfinite(params).all():
        raise ArtifactError("the generator produced NaN or Inf parameters: retrain with `pdiff train --force`")
    tensors = {"params": params, "latents": latents, "original_latents": gen.encode(training.params)}
    if heldout is not None:
        tensors["heldout_latents"] = gen.encode(heldout.params)
    save_tensors(out / GENERATED_FILE, tensors, {**task.metadata("generate"), "spec": spec.to_dict()})
    return {}


def load(task: Task, run_dir: Path, spec: ParamSpec) -> Generated:
    """The generated vectors of `run_dir`, checked to be made under this config for `spec` and finite."""
    path = run_dir / FOLDER / GENERATED_FILE
    tensors, meta = load_tensors(path)
    task.check_made_for(path, meta, "generate")
    if ParamSpec.from_dict(meta.get("spec", {"names": [], "shapes": []})) != spec:
        raise ArtifactError(f"{GENERATED_FILE} was made for another parameter subset: rerun `pdiff generate --force`")
    if "params" not in tensors or not torch.isfinite(tensors["params"]).all():
        raise ArtifactError(f"{path} holds no finite 'params': rerun `pdiff generate --force`")
    if "latents" not in tensors or "original_latents" not in tensors:
        raise ArtifactError(f"{path} holds no latents (an older pdiff made it): rerun `pdiff generate --force`")
    empty = torch.empty(0, *tensors["latents"].shape[1:])
    return Generated(tensors["params"], tensors["latents"], tensors["original_latents"],
                     tensors.get("heldout_latents", empty))


def sample_models(run_dir: str | Path, n: int, out_dir: str | Path, seed: int = 0, sampler: str = "ddpm",
                  steps: int | None = None) -> list[Path]:
    """Write `n` full-model state_dicts (base weights + generated subset) from a trained run."""
    if n < 1:
        raise ConfigError(f"-n {n}: ask for at least one model")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give a positive number of sampling steps (or leave it out for all)")
    run_dir = Path(run_dir)
    base, meta = load_tensors(run_dir / collect.FOLDER / collect.BASE_FILE)
    gen = ParameterGenerator.load(run_dir / train.FOLDER)
    missing = [name for name in gen.spec.names if name not in base]
    if missing:
        raise ArtifactError(f"the generator in {run_dir} makes {missing[0]!r}, which the base model lacks: "
                            "the run folder mixes two models; rerun `pdiff train --force`")
    vectors = gen.sample(n, sampler=sampler, steps=steps, seed=seed)
    paths = []
    for i, vector in enumerate(vectors):
        path = Path(out_dir) / f"model_{i:03d}.safetensors"
        save_tensors(path, gen.spec.to_state_dict(vector, base),
                     {**meta, "spec": gen.spec.to_dict(), "sample_index": i, "seed": seed})
        paths.append(path)
    return paths
