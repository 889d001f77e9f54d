"""Stage 3, generate: noise -> diffusion -> decoder -> parameter vectors; and ready-to-load models (`pdiff sample`).

The stage writes generate/generated.safetensors: the generated params [N, D] and latents [N, d] ([N, G + T, c]
for token latents), and the latents of the original checkpoints [K, d] beside them, so that later stages never
open the generator. With generate.target (a generator conditioned on accuracy) its metadata and stage.json
also record the target, the validation accuracy it stands for, and the guidance.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from . import collect, train
from .config import Config
from .diffusion import SAMPLERS
from .errors import ArtifactError, ConfigError
from .generator import ParameterGenerator
from .hashing import check_made_under, config_hash, made_under
from .params import ParamSpec
from .store import STORAGE_ERRNOS, load_tensors, save_tensors, storage_error
from .tasks import Task

FOLDER = "generate"  # runs/<task>/generate/
CONFIG_SECTIONS = (*train.CONFIG_SECTIONS, "generate")
GENERATED_FILE = "generated.safetensors"


@dataclass
class Generated:
    """The generated parameter vectors [N, D] with their latents [N, d], the latents of the checkpoints the
    generator was trained on [K - H, d] and of the held-out ones [H, d] (empty without train.holdout), and
    what they were conditioned on: {"target", "target_accuracy", "guidance"}, or {} when unconditioned."""

    params: torch.Tensor
    latents: torch.Tensor
    original_latents: torch.Tensor
    heldout_latents: torch.Tensor
    conditioning: dict = field(default_factory=dict)


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Sample generate.n vectors from the run's generator and write them into `out`."""
    collected = collect.load(task, run_dir)
    spec = collected.checkpoints.spec
    training, heldout = collected.checkpoints.split(task.config.train.holdout, task.config.train.holdout_split)
    gen = train.load(task, run_dir, spec)
    cfg = task.config.generate
    latents = gen.sample_latents(cfg.n, cfg.sampler, cfg.steps, seed=task.config.seed, progress=task.progress,
                                 target=cfg.target, guidance=cfg.guidance)
    params = gen.decode(latents)
    if not torch.isfinite(params).all():
        raise ArtifactError("the generator produced NaN or Inf parameters: retrain with `pdiff train --force`")
    tensors = {"params": params, "latents": latents, "original_latents": gen.encode(training.params)}
    if heldout is not None:
        tensors["heldout_latents"] = gen.encode(heldout.params)
    conditioning = {} if cfg.target is None else {
        "target": cfg.target, "target_accuracy": gen.target_accuracy(cfg.target, "generate.target"),
        "guidance": cfg.guidance}
    metadata = {**made_under(task.config, CONFIG_SECTIONS), "spec": spec.to_dict(), **conditioning}
    save_tensors(out / GENERATED_FILE, tensors, metadata)
    return conditioning


def load(task: Task, run_dir: Path, spec: ParamSpec) -> Generated:
    """The generated vectors of `run_dir`, checked to be made under this config for `spec` and finite."""
    path = run_dir / FOLDER / GENERATED_FILE
    tensors, meta = load_tensors(path)
    check_made_under(task.config, CONFIG_SECTIONS, path, meta, "generate")
    if ParamSpec.from_dict(meta.get("spec", {"names": [], "shapes": []})) != spec:
        raise ArtifactError(f"{GENERATED_FILE} was made for another parameter subset: rerun `pdiff generate --force`")
    if "params" not in tensors or not torch.isfinite(tensors["params"]).all():
        raise ArtifactError(f"{path} holds no finite 'params': rerun `pdiff generate --force`")
    if "latents" not in tensors or "original_latents" not in tensors:
        raise ArtifactError(f"{path} holds no latents (an older pdiff made it): rerun `pdiff generate --force`")
    empty = torch.empty(0, *tensors["latents"].shape[1:])
    conditioning = {key: meta[key] for key in ("target", "target_accuracy", "guidance") if key in meta}
    return Generated(tensors["params"], tensors["latents"], tensors["original_latents"],
                     tensors.get("heldout_latents", empty), conditioning)


def sample_models(run_dir: str | Path, n: int, out_dir: str | Path, seed: int = 0, sampler: str = "ddpm",
                  steps: int | None = None, force: bool = False, target: str | None = None, guidance: float = 0.0
                  ) -> list[Path]:
    """Write `n` full-model state_dicts (base weights + generated subset) into `out_dir`, from a trained run, a
    folder written by `pdiff export` or a hub repo id.

    In a run folder the base model and the generator's two files must come from its config.yaml (their config
    hashes). A non-empty `out_dir` is refused unless `force`; then its model_NNN files are replaced by the new
    ones (written into a folder beside it first, so a failure leaves the old ones, and none of them stays behind).
    target / guidance (a generator conditioned on accuracy): the validation accuracy to ask for and the
    classifier-free guidance weight, as `ParameterGenerator.sample_latents` takes them.
    """
    if n < 1:
        raise ConfigError(f"-n {n}: ask for at least one model")
    if sampler not in SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give a positive number of sampling steps (or leave it out for all)")
    if guidance < 0 or (guidance != 0 and target is None):
        raise ConfigError(f"--guidance {guidance}: give a weight of 0 or more, with --target")
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, force)
    gen, base, meta = _generator_and_base(run_dir)
    if meta.get("spec") not in (None, gen.spec.to_dict()):
        raise ArtifactError(f"the generator in {run_dir} makes another parameter subset than the base model's: "
                            "rerun `pdiff train --force`")
    missing = [name for name in gen.spec.names if name not in base]
    if missing:
        raise ArtifactError(f"the generator in {run_dir} makes {missing[0]!r}, which the base model lacks: "
                            "the run folder mixes two models; rerun `pdiff train --force`")
    check_memory(n, gen.spec.dim, 0, f"-n {n}")
    conditioning = {} if target is None else {
        "target": target, "target_accuracy": gen.target_accuracy(target, "--target"), "guidance": guidance}
    vectors = gen.sample(n, sampler=sampler, steps=steps, seed=seed, target=target, guidance=guidance)
    if not torch.isfinite(vectors).all():
        raise ArtifactError("the generator produced NaN or Inf parameters: retrain with `pdiff train --force`")
    partial = out_dir.with_name(f".{out_dir.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for i, vector in enumerate(vectors):  # a full disk fails here, before anything in out_dir is touched
            save_tensors(partial / _model_file(i), gen.spec.to_state_dict(vector, base),
                         {**meta, "spec": gen.spec.to_dict(), "sample_index": i, "seed": seed, **conditioning})
        return _move_models(partial, out_dir, n)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _move_models(partial: Path, out_dir: Path, n: int) -> list[Path]:
    """Replace out_dir's model_NNN files with the `n` in `partial` (renames: no copy, no partial file)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for old in sorted(out_dir.glob("model_*.safetensors")):
            old.unlink()
        for i in range(n):
            os.replace(partial / _model_file(i), out_dir / _model_file(i))
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        raise storage_error(out_dir, e) from None
    return [out_dir / _model_file(i) for i in range(n)]


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


def _model_file(i: int) -> str:
    return f"model_{i:03d}.safetensors"


def _check_out_dir(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder: pass a folder for the models")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConfigError(f"--out {out_dir} is not empty: pass --force to replace its models, or another --out")


def read_run_config(run_dir: Path) -> Config:
    """The config that made what `run_dir` holds (its config.yaml), read as written: not validated, since a run
    made on a GPU machine must still be readable on a CPU one."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: {run_dir} is not a finished run; run `pdiff run` first")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.load(path)))
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ArtifactError(f"{path} is not a pdiff config ({str(e).strip().splitlines()[0]}): rerun "
                            "`pdiff run` to rewrite it") from None


def _generator_and_base(source: str | Path) -> tuple[ParameterGenerator, dict[str, torch.Tensor], dict]:
    """The generator and the base model's tensors and metadata of a run folder, an export or a hub repo id."""
    from . import hub  # hub builds on the stages, this one included

    path = Path(source)
    exported = (path / hub.CONFIG_FILE).is_file() if path.is_dir() else hub.is_repo_id(str(source))
    if not exported:  # a run folder: its base model and generator must be of the config in its config.yaml
        base, meta = load_tensors(path / collect.FOLDER / collect.BASE_FILE)
        config = read_run_config(path)
        expected = config_hash(config, collect.CONFIG_SECTIONS)
        if meta.get("config_hash") != expected:
            raise ArtifactError(f"the base model in {path} was made under another config (hash "
                                f"{meta.get('config_hash')}) than its config.yaml (hash {expected}"
                                "): rerun `pdiff collect --force`")
        generator = ParameterGenerator.load(path / train.FOLDER, config_hash=config_hash(config, train.CONFIG_SECTIONS))
        return generator, base, meta
    folder = hub.download(source)
    if not (folder / collect.BASE_FILE).is_file():
        raise ArtifactError(f"{source} was exported without its base model, so it makes only the subset: sample "
                            "vectors with ParameterGenerator.from_pretrained, or export the run again with its base")
    base, meta = load_tensors(folder / collect.BASE_FILE)
    return ParameterGenerator.from_pretrained(folder), base, meta
