"""Stage 3, generate: noise -> diffusion -> decoder -> parameter vectors.

The stage writes generate/generated.safetensors: the generated params [N, D] and latents [N, d] ([N, G + T, c]
for token latents), and the latents of the original checkpoints [K, d] beside them, so that later stages never
open the generator. With generate.target (a generator conditioned on accuracy) its metadata and stage.json
also record the target, the validation accuracy it stands for, and the guidance. `check_memory` refuses, before
any work, more models than this machine's memory holds (the runner and `pdiff sample` ask it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import collect, train
from .errors import ArtifactError, ConfigError
from .hashing import check_hash, config_hash, made_under
from .layout import GENERATED_FILE, STAGE_FOLDERS
from .params import ParamSpec
from .store import load_tensors, save_tensors
from .task import Task

FOLDER = STAGE_FOLDERS["generate"]  # runs/<task>/generate/
CONFIG_SECTIONS = (*train.CONFIG_SECTIONS, "generate")


@dataclass
class Generated:
    """The generated parameter vectors [N, D] with their latents [N, d], the latents of the checkpoints the
    generator was trained on [K - H, d] and of the held-out ones [H, d] (empty without train.holdout), which
    generator drew each vector [N] (0 .. train.generators - 1; latents are comparable within one generator
    only, and the checkpoints' are generator 0's), and what they were conditioned on: {"target",
    "target_accuracy", "guidance"}, or {} when unconditioned."""

    params: torch.Tensor
    latents: torch.Tensor
    original_latents: torch.Tensor
    heldout_latents: torch.Tensor
    generator: torch.Tensor
    conditioning: dict = field(default_factory=dict)


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Sample generate.n vectors from the run's generators (spread evenly, generator s seeded seed + s) and write
    them into `out`."""
    collected = collect.load(task, run_dir)
    spec = collected.checkpoints.spec
    training, heldout = train.split(task, run_dir, collected)
    generators = train.load_all(task, run_dir, spec)
    cfg = task.config.generate
    latents, params, members = [], [], []
    for member, (gen, n) in enumerate(zip(generators, spread(cfg.n, len(generators)), strict=True)):
        drawn = gen.sample_latents(n, cfg.sampler, cfg.steps, seed=task.config.seed + member, progress=task.progress,
                                   target=cfg.target, guidance=cfg.guidance)
        latents.append(drawn)
        params.append(gen.decode(drawn))
        members.append(torch.full((n,), member, dtype=torch.int64))
    gen, params = generators[0], torch.cat(params)
    finite = bool(torch.isfinite(params).all())
    if not finite and cfg.guidance:  # guidance extrapolates past both models' predictions
        raise ArtifactError(f"generate.guidance={cfg.guidance} pushed the samples to NaN or Inf parameters: lower "
                            "generate.guidance (0 turns guidance off)")
    if not finite:
        raise ArtifactError("the generator produced NaN or Inf parameters: retrain with `pdiff train --force`")
    tensors = {"params": params, "latents": torch.cat(latents), "original_latents": gen.encode(training.params)}
    if len(generators) > 1:  # which generator drew each row (latents of different generators live apart)
        tensors["generator"] = torch.cat(members)
    if heldout is not None:
        tensors["heldout_latents"] = gen.encode(heldout.params)
    conditioning = {} if cfg.target is None else {
        "target": cfg.target, "target_accuracy": gen.target_accuracy(cfg.target, "generate.target"),
        "guidance": cfg.guidance}
    metadata = {**made_under(task.config, CONFIG_SECTIONS), "spec": spec.to_dict(), **conditioning}
    save_tensors(out / GENERATED_FILE, tensors, metadata)
    return conditioning


def spread(n: int, generators: int) -> list[int]:
    """How many of n models each generator draws: evenly, the remainder to the first."""
    return [n // generators + (n % generators if s == 0 else 0) for s in range(generators)]


def load(task: Task, run_dir: Path, spec: ParamSpec) -> Generated:
    """The generated vectors of `run_dir`, checked to be made under this config for `spec` and finite."""
    return read(run_dir, config_hash(task.config, CONFIG_SECTIONS), spec)


def read(run_dir: Path, config_hash: str, spec: ParamSpec) -> Generated:
    """The generated vectors of `run_dir`, checked to be made under the config of `config_hash` for `spec`."""
    path = run_dir / FOLDER / GENERATED_FILE
    tensors, meta = load_tensors(path)
    check_hash(path, meta, config_hash, "generate")
    if ParamSpec.from_dict(meta.get("spec", {"names": [], "shapes": []})) != spec:
        raise ArtifactError(f"{GENERATED_FILE} was made for another parameter subset: rerun `pdiff generate --force`")
    if "params" not in tensors or not torch.isfinite(tensors["params"]).all():
        raise ArtifactError(f"{path} holds no finite 'params': rerun `pdiff generate --force`")
    if "latents" not in tensors or "original_latents" not in tensors:
        raise ArtifactError(f"{path} holds no latents (an older pdiff made it): rerun `pdiff generate --force`")
    empty = torch.empty(0, *tensors["latents"].shape[1:])
    conditioning = {key: meta[key] for key in ("target", "target_accuracy", "guidance") if key in meta}
    generator = tensors.get("generator", torch.zeros(len(tensors["params"]), dtype=torch.int64))
    return Generated(tensors["params"], tensors["latents"], tensors["original_latents"],
                     tensors.get("heldout_latents", empty), generator, conditioning)


def check_memory(n: int, dim: int, examples: int, setting: str) -> None:
    """Refuse `n` models of D=`dim` that cannot fit in this machine's free memory, naming `setting`.

    A lower bound: the vectors [n, D] float32 three times (sampled, decoded, saved) and the evaluation's
    predictions [n, examples] int64 of the generated models alone (the baselines add more).
    """
    need = n * dim * 4 * 3 + n * examples * 8
    have = available_memory()
    if have is not None and need > have:
        on = f" and their predictions on {examples} examples" if examples else ""
        raise ConfigError(f"{setting} needs at least {need / 2**30:.1f} GiB of memory ({n} models of D={dim}{on}) "
                          f"but {have / 2**30:.1f} GiB are free: ask for fewer models (pdiff sample can add more "
                          "later, in batches)")


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux MemAvailable), or None where it cannot be read."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
