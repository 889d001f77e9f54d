"""`pdiff sample`: ready-to-load models from a trained generator, without retraining anything.

The source is a finished run folder (read through `open_run`), a folder written by `pdiff export`, or a hub repo
id. Each model is a full state_dict, the base model with the generated subset in place, written as
`--out`/model_NNN.safetensors beside samples.json (what made them: the source, seed, sampler; it marks the
folder as pdiff's). A run that generates LoRA adapters (model.peft) can write them as PEFT adapter folders
instead (`format="peft"`): `--out`/model_NNN/ that `peft.PeftModel.from_pretrained(base, folder)` loads, beside
the base model without its adapters (base.safetensors). `--out` is written whole or not at all
(`pdiff.folders.atomic_folder`): a new or empty folder, or an earlier `pdiff sample` output replaced with
`force` (files the user added to it are kept).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from .adapters import add_adapters, save_adapter
from .diffusion import SAMPLERS
from .errors import ArtifactError, ConfigError
from .folders import LIBRARY, Marker, atomic_folder
from .generate import check_memory
from .generator import ParameterGenerator
from .hub import download, is_repo_id
from .layout import BASE_FILE, EXPORT_CONFIG_FILE, SAMPLES_FILE, model_file, stage_folder
from .priors.flow import FLOW_SAMPLERS, FlowPrior
from .run_folder import open_run
from .store import load_tensors, save_json, save_tensors
from .tasks.models import build_model

SAMPLES = Marker(SAMPLES_FILE, "samples", "`pdiff sample` output")
FORMAT_VERSION = 1  # of samples.json
FORMATS = ("safetensors", "peft")  # full state_dicts, or PEFT adapter folders


def sample_models(run_dir: str | Path, n: int, out_dir: str | Path, seed: int = 0, sampler: str = "ddpm",
                  steps: int | None = None, force: bool = False, target: str | None = None, guidance: float = 0.0,
                  format: str = "safetensors") -> list[Path]:
    """Write `n` full-model state_dicts (base weights + generated subset) into `out_dir`, from a trained run, a
    folder written by `pdiff export` or a hub repo id; returns their paths.

    In a run folder the base model and the generator must come from its config.yaml (their config hashes).
    target / guidance (a generator conditioned on accuracy): the validation accuracy to ask for and the
    classifier-free guidance weight, as `ParameterGenerator.sample_latents` takes them.
    format: "safetensors" (model_NNN.safetensors) or "peft" (model_NNN/ adapter folders; see the module docstring).
    """
    if n < 1:
        raise ConfigError(f"-n {n}: ask for at least one model")
    if sampler not in SAMPLERS + FLOW_SAMPLERS:
        raise ConfigError(f"--sampler {sampler!r}: choose one of {', '.join(SAMPLERS + FLOW_SAMPLERS)}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give a positive number of sampling steps (or leave it out for all)")
    if guidance < 0 or (guidance != 0 and target is None):
        raise ConfigError(f"--guidance {guidance}: give a weight of 0 or more, with --target")
    if format not in FORMATS:
        raise ConfigError(f"--format {format!r}: choose one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} is a file, not a folder: pass a folder for the models")
    gen, base, meta = generator_and_base(run_dir)
    if meta.get("spec") not in (None, gen.spec.to_dict()):
        raise ArtifactError(f"the generator in {run_dir} makes another parameter subset than the base model's: "
                            "rerun `pdiff train --force`")
    missing = [name for name in gen.spec.names if name not in base]
    if missing:
        raise ArtifactError(f"the generator in {run_dir} makes {missing[0]!r}, which the base model lacks: "
                            "the run folder mixes two models; rerun `pdiff train --force`")
    if (sampler in FLOW_SAMPLERS) != isinstance(gen.prior, FlowPrior):
        choices = FLOW_SAMPLERS if isinstance(gen.prior, FlowPrior) else SAMPLERS
        raise ConfigError(f"--sampler {sampler}: this generator is sampled by {', '.join(choices)}")
    adapted = adapted_base(base, meta, run_dir) if format == "peft" else None  # refuses a run without adapters
    check_memory(n, gen.spec.dim, 0, f"-n {n}")
    conditioning = {} if target is None else {
        "target": target, "target_accuracy": gen.target_accuracy(target, "--target"), "guidance": guidance}
    with atomic_folder(out_dir, SAMPLES, force) as folder:  # refuses a folder it may not replace, before sampling
        vectors = gen.sample(n, sampler=sampler, steps=steps, seed=seed, target=target, guidance=guidance)
        if not torch.isfinite(vectors).all():
            raise ArtifactError("the generator produced NaN or Inf parameters: retrain with `pdiff train --force`")
        for i, vector in enumerate(vectors):
            if adapted is None:
                save_tensors(folder / model_file(i), gen.spec.to_state_dict(vector, base),
                             {**meta, "spec": gen.spec.to_dict(), "sample_index": i, "seed": seed, **conditioning})
            else:
                save_adapter(gen.spec.load_into(adapted, vector), folder / adapter_folder(i))
        if adapted is not None:
            save_tensors(folder / BASE_FILE, copy.deepcopy(adapted).unload().state_dict(), {
                key: meta[key] for key in ("model", "input_shape", "num_classes", "model_kwargs") if key in meta})
        save_json(folder / SAMPLES_FILE, {"library_name": LIBRARY, "kind": SAMPLES.kind,
                                          "format_version": FORMAT_VERSION, "source": str(run_dir), "n": n,
                                          "seed": seed, "sampler": sampler, "steps": steps, **conditioning,
                                          **({"format": format} if adapted is not None else {})})
    return [out_dir / (model_file(i) if adapted is None else adapter_folder(i)) for i in range(n)]


def adapter_folder(i: int) -> str:
    """The i-th model's adapter folder (`format="peft"`): model_000, ..."""
    return model_file(i).removesuffix(".safetensors")


def adapted_base(base: dict[str, torch.Tensor], meta: dict, source: str | Path) -> nn.Module:
    """The base model wrapped with its LoRA adapters, built from what base.safetensors records (`meta`) and
    holding `base`, its weights; a ConfigError where the run generates no adapters."""
    if meta.get("peft") is None:
        raise ConfigError(f"--format peft writes LoRA adapters, which {source} does not generate (its config has "
                          "no model.peft): leave --format out for full state_dicts")
    model = add_adapters(build_model(meta["model"], tuple(meta["input_shape"]), meta["num_classes"],
                                     **meta.get("model_kwargs", {})), meta["peft"], seed=0)
    model.load_state_dict(base)
    return model.eval()

def generator_and_base(source: str | Path) -> tuple[ParameterGenerator, dict[str, torch.Tensor], dict]:
    """The generator and the base model's tensors and metadata of a run folder, an export or a hub repo id."""
    path = Path(source)
    exported = (path / EXPORT_CONFIG_FILE).is_file() if path.is_dir() else is_repo_id(str(source))
    if not exported:  # a run folder: its base model and generator must be of the config in its config.yaml
        base_file = stage_folder(path, "collect") / BASE_FILE
        if not base_file.is_file():
            raise ArtifactError(f"{base_file} does not exist: run the stage that writes it first (`pdiff run`), or "
                                "give a folder written by `pdiff export`")
        run = open_run(path)
        base, meta = run.base_state
        return run.generator, base, meta
    folder = download(source)
    gen = ParameterGenerator.from_pretrained(folder)
    if not (folder / BASE_FILE).is_file():
        raise ArtifactError(f"{source} was exported without its base model, so it makes only the subset: sample "
                            "vectors with ParameterGenerator.from_pretrained, or export the run again with its base")
    base, meta = load_tensors(folder / BASE_FILE)
    return gen, base, meta
