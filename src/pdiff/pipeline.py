"""The run directory: each stage reads the files of the stage before it and writes its own folder.

runs/<task>/{config.yaml, collect/, generator/, generate/, evaluate/, report/} as DESIGN.md section 1.
A stage is done when its folder holds `stage.json` with the hash of the config it depends on (written
last, after every artifact), so a rerun skips finished stages and resumes after a crash.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from . import report as report_module
from .baselines import weight_average
from .collect import CheckpointSet, collect, train_base
from .config import STAGES, Config, ConfigError, base_hash, stage_hash, to_dict, to_yaml
from .evaluate import accuracy, labels_of, predict_many
from .generator import ParameterGenerator
from .params import ParamSpec
from .similarity import similarity_summary
from .store import ArtifactError, load_json, load_tensors, save_json, save_tensors, save_text
from .tasks.datasets import DataSplits, TensorLoader, load_dataset
from .tasks.models import build_model

log = logging.getLogger(__name__)
STAGE_DIRS = {"collect": "collect", "train": "generator", "generate": "generate", "evaluate": "evaluate",
              "report": "report"}


class HealthError(RuntimeError):
    """The autoencoder cannot reproduce the checkpoints it was trained on."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a torch device: use auto, cpu, cuda or cuda:N") from None


@dataclass
class Run:
    """One task's run directory and what its stages share (data, loaders, the base model)."""

    config: Config
    root: Path
    progress: bool = True
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return resolve_device(self.config.device)

    def stage_dir(self, stage: str) -> Path:
        return self.root / STAGE_DIRS[stage]

    def is_done(self, stage: str) -> bool:
        marker = self.stage_dir(stage) / "stage.json"
        return marker.is_file() and load_json(marker).get("hash") == stage_hash(self.config, stage)

    @cached_property
    def data(self) -> DataSplits:
        d = self.config.data
        return load_dataset(d.name, d.data_dir, d.val_size, self.config.seed, d.num_samples, d.download)

    def loader(self, split: str) -> TensorLoader:
        return TensorLoader(getattr(self.data, split), self.config.data.eval_batch_size)

    def new_model(self) -> nn.Module:
        return build_model(self.config.model.name, self.data.input_shape, self.data.num_classes,
                           **self.config.model.kwargs)

    def base_model(self) -> nn.Module:
        """The trained base model read from collect/base.safetensors."""
        tensors, meta = load_tensors(self.stage_dir("collect") / "base.safetensors")
        model = self.new_model()
        try:
            model.load_state_dict(tensors)
        except RuntimeError as e:
            raise ArtifactError(f"base.safetensors was saved from model {meta.get('model')!r}, not from this "
                                f"task's {self.config.model.name!r} ({str(e).splitlines()[0]}): rerun "
                                "`pdiff collect --force`") from None
        return model.to(self.device).eval()

    def checkpoints(self, model: nn.Module) -> CheckpointSet:
        """The collected checkpoints, checked against `model` and this config."""
        ckpts, meta = CheckpointSet.load(self.stage_dir("collect") / "checkpoints.safetensors")
        ckpts.spec.check(model)
        if meta.get("config_hash") != stage_hash(self.config, "collect"):
            raise ArtifactError("checkpoints.safetensors was collected under another config: rerun "
                                "`pdiff collect --force`")
        return ckpts

    def metadata(self, stage: str) -> dict:
        return {"task": self.config.task, "config_hash": stage_hash(self.config, stage),
                "model": self.config.model.name}


def run_stage(run: Run, stage: str, force: bool = False) -> bool:
    """Run one stage unless it is already done for this config; returns whether it ran."""
    if not force and run.is_done(stage):
        log.info("%s: already done for this config, skipped (--force %s reruns it)", stage, stage)
        return False
    for before in STAGES[: STAGES.index(stage)]:
        if not run.is_done(before):
            raise ArtifactError(f"stage {stage!r} needs {before!r} first: run `pdiff {before}` (or `pdiff run`)")
    torch.manual_seed(run.config.seed)
    start = time.perf_counter()
    extra = STAGE_FUNCTIONS[stage](run) or {}
    seconds = time.perf_counter() - start
    run.seconds[stage] = seconds
    save_json(run.stage_dir(stage) / "stage.json",
              {"hash": stage_hash(run.config, stage), "seconds": round(seconds, 2), **extra})
    log.info("%s: done in %.1f s", stage, seconds)
    return True


def run_pipeline(config: Config, runs_dir: str | Path = "runs", force: str | None = None,
                 stages: tuple[str, ...] = STAGES, progress: bool = True) -> Run:
    """Take a task through `stages`; `force` reruns that stage and every stage after it."""
    if force is not None and force not in STAGES:
        raise ConfigError(f"--force {force!r}: choose one of {', '.join(STAGES)}")
    run = Run(config, Path(runs_dir) / config.task, progress)
    run.root.mkdir(parents=True, exist_ok=True)
    save_text(run.root / "config.yaml", f"# hash: {stage_hash(config, 'report')}\n{to_yaml(config)}")
    for stage in stages:
        forced = force is not None and STAGES.index(stage) >= STAGES.index(force)
        run_stage(run, stage, force=forced)
    return run


# ---- the stages -----------------------------------------------------------------------------------
def collect_stage(run: Run) -> dict:
    cfg = run.config.collect
    generator = torch.Generator().manual_seed(run.config.seed)
    train_loader = TensorLoader(run.data.train, run.config.data.batch_size, shuffle=True, generator=generator)
    model = run.new_model()
    spec = ParamSpec.select(model, cfg.subset)  # fail on a bad pattern before training
    base_meta = {**run.metadata("collect"), "input_shape": list(run.data.input_shape),
                 "num_classes": run.data.num_classes, "model_kwargs": run.config.model.kwargs,
                 "base_hash": base_hash(run.config)}
    base_path = run.stage_dir("collect") / "base.safetensors"
    saved, saved_meta = load_tensors(base_path) if base_path.is_file() else ({}, {})
    if saved_meta.get("base_hash") == base_meta["base_hash"]:
        log.info("collect: reusing %s (same seed, data, model and base training)", base_path)
        model.load_state_dict(saved)
        model.to(run.device).eval()
        for _ in range(cfg.epochs):  # replay base training's shuffles: collection sees a fresh run's batches
            for _ in train_loader:
                pass
    else:
        train_base(model, train_loader, cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, run.device,
                   run.progress)
        save_tensors(base_path, model.state_dict(), base_meta)
    ckpts = collect(copy.deepcopy(model), train_loader, spec, cfg.k, cfg.recipe, cfg.subset_lr,
                    cfg.subset_weight_decay, run.device, run.progress)
    val_pred = predict_many(model, spec, ckpts.params, run.loader("val"), run.config.evaluate.model_chunk, run.device)
    test_pred = predict_many(model, spec, ckpts.params, run.loader("test"), run.config.evaluate.model_chunk,
                             run.device)
    ckpts.val_accuracy = accuracy(val_pred, labels_of(run.loader("val")))
    ckpts.test_accuracy = accuracy(test_pred, labels_of(run.loader("test")))
    ckpts.save(run.stage_dir("collect") / "checkpoints.safetensors", base_meta)
    log.info("collect: %d checkpoints of %d parameters, val accuracy %.2f-%.2f%%", len(ckpts), spec.dim,
             100 * ckpts.val_accuracy.min(), 100 * ckpts.val_accuracy.max())
    return {"dim": spec.dim, "names": list(spec.names)}


def train_stage(run: Run) -> dict:
    model = run.base_model()
    ckpts = run.checkpoints(model)
    gen = ParameterGenerator(ckpts.spec, run.config.train, run.device, run.config.seed)
    gen.fit_autoencoder(ckpts, run.progress)
    health = check_reconstructions(gen, model, ckpts, run.loader("val"), run.config.train.health_tolerance,
                                   run.config.evaluate.model_chunk, run.device)
    gen.fit_diffusion(ckpts, run.progress)
    gen.save(run.stage_dir("train"), run.metadata("train"))
    save_text(run.stage_dir("train") / "metrics.csv", _csv(gen.metrics))
    return {"health": health}


def check_reconstructions(gen: ParameterGenerator, model: nn.Module, ckpts: CheckpointSet, val_loader,
                          tolerance: float, chunk: int = 50, device: torch.device | str = "cpu") -> dict:
    """The health gate: decoded checkpoints must keep the originals' validation accuracy (within tolerance)."""
    labels = labels_of(val_loader)
    original = accuracy(predict_many(model, ckpts.spec, ckpts.params, val_loader, chunk, device), labels).mean()
    rebuilt = accuracy(predict_many(model, ckpts.spec, gen.reconstruct(ckpts.params), val_loader, chunk, device),
                       labels).mean()
    health = {"original_val_accuracy": original.item(), "reconstructed_val_accuracy": rebuilt.item()}
    log.info("train: autoencoder reconstructions keep %.2f%% val accuracy (originals %.2f%%)",
             100 * rebuilt, 100 * original)
    if original - rebuilt > tolerance:
        raise HealthError(
            f"the autoencoder's reconstructions reach {100 * rebuilt:.1f}% mean val accuracy against "
            f"{100 * original:.1f}% for the checkpoints: it has collapsed; raise train.autoencoder.steps, "
            "lower train.autoencoder.latent_noise or try train.autoencoder.arch=mlp")
    return health


def generate_stage(run: Run) -> dict:
    model = run.base_model()
    spec = run.checkpoints(model).spec
    gen = ParameterGenerator.load(run.stage_dir("train"), run.device, spec)
    cfg = run.config.generate
    latents = gen.sample_latents(cfg.n, cfg.sampler, cfg.steps, seed=run.config.seed, progress=run.progress)
    params = gen.decode(latents)
    if not torch.isfinite(params).all():
        raise ArtifactError("the generator produced NaN or Inf parameters: retrain with `pdiff train --force`")
    save_tensors(run.stage_dir("generate") / "generated.safetensors", {"params": params, "latents": latents},
                 {**run.metadata("generate"), "spec": spec.to_dict()})
    return {}


def evaluate_stage(run: Run) -> dict:
    model = run.base_model()
    ckpts = run.checkpoints(model)
    generated, meta = load_tensors(run.stage_dir("generate") / "generated.safetensors")
    if ParamSpec.from_dict(meta.get("spec", {"names": [], "shapes": []})) != ckpts.spec:
        raise ArtifactError("generated.safetensors was made for another parameter subset: "
                            "rerun `pdiff generate --force`")
    groups = {"original": ckpts.params, "ensemble": weight_average(ckpts.params), "generated": generated["params"]}
    records, test_rows = [], []
    val_labels, test_labels = labels_of(run.loader("val")), labels_of(run.loader("test"))
    for group, vectors in groups.items():
        chunk, device = run.config.evaluate.model_chunk, run.device
        val_acc = accuracy(predict_many(model, ckpts.spec, vectors, run.loader("val"), chunk, device), val_labels)
        test_pred = predict_many(model, ckpts.spec, vectors, run.loader("test"), chunk, device)
        test_acc = accuracy(test_pred, test_labels)
        records += [{"group": group, "index": i, "val_accuracy": v, "test_accuracy": t}
                    for i, (v, t) in enumerate(zip(val_acc.tolist(), test_acc.tolist(), strict=True))]
        test_rows.append(test_pred)
    predictions = torch.cat(test_rows)
    results = {"task": run.config.task, "config_hash": stage_hash(run.config, "evaluate"), "models": records,
               "summary": summarise(records),
               "similarity": similarity_summary(predictions, test_labels, [r["group"] for r in records])}
    save_tensors(run.stage_dir("evaluate") / "predictions.safetensors",
                 {"predictions": predictions.to(torch.int16), "labels": test_labels},
                 run.metadata("evaluate"))
    save_json(run.stage_dir("evaluate") / "results.json", results)
    return {}


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per group: 'best' = test accuracy of the model with the best val accuracy, plus max/mean/median/min."""
    summary = {}
    for group in dict.fromkeys(r["group"] for r in records):
        rows = [r for r in records if r["group"] == group]
        val = torch.tensor([r["val_accuracy"] for r in rows])
        test = torch.tensor([r["test_accuracy"] for r in rows])
        summary[group] = {"count": len(rows), "best": test[val.argmax()].item(), "max": test.max().item(),
                          "mean": test.mean().item(), "median": test.median().item(), "min": test.min().item(),
                          "std": test.std().item() if len(rows) > 1 else 0.0,
                          "val_best": val.max().item(), "val_mean": val.mean().item(),
                          "val_median": val.median().item()}
    return summary


def report_stage(run: Run) -> dict:
    results = load_json(run.stage_dir("evaluate") / "results.json")
    seconds = {s: load_json(run.stage_dir(s) / "stage.json").get("seconds") for s in STAGES[:-1]}
    report_module.write_report(run.stage_dir("report"), results, to_dict(run.config), seconds)
    return {}


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["network", "step", "loss"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


STAGE_FUNCTIONS: dict[str, Callable[[Run], dict | None]] = {
    "collect": collect_stage, "train": train_stage, "generate": generate_stage, "evaluate": evaluate_stage,
    "report": report_stage,
}


def sample_models(run_dir: str | Path, n: int, out_dir: str | Path, seed: int = 0, sampler: str = "ddpm",
                  steps: int | None = None) -> list[Path]:
    """Write `n` full-model state_dicts (base weights + generated subset) from a trained run."""
    if n < 1:
        raise ConfigError(f"-n {n}: ask for at least one model")
    run_dir = Path(run_dir)
    base, meta = load_tensors(run_dir / STAGE_DIRS["collect"] / "base.safetensors")
    gen = ParameterGenerator.load(run_dir / STAGE_DIRS["train"])
    missing = [name for name in gen.spec.names if name not in base]
    if missing:
        raise ArtifactError(f"the generator in {run_dir} makes {missing[0]!r}, which the base model lacks: "
                            "the run folder mixes two models; rerun `pdiff train --force`")
    vectors = gen.sample(n, sampler=sampler, steps=steps, seed=seed)
    paths = []
    for i, vector in enumerate(vectors):
        path = Path(out_dir) / f"model_{i:03d}.safetensors"
        save_tensors(path, gen.spec.to_state_dict(vector, base), {**meta, "sample_index": i, "seed": seed})
        paths.append(path)
    return paths
