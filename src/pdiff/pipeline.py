"""The run directory: each stage reads the files of the stage before it and writes its own folder.

runs/<task>/{config.yaml, collect/, generator/, generate/, evaluate/, report/} as DESIGN.md section 1.
A stage is done when its folder holds `stage.json` with the hash of the config it depends on (written
last, after every artifact) and every file it lists, so a rerun skips finished stages and resumes after a
crash. A stage writes into `.<folder>.partial/`, renamed onto its folder only once it succeeds (which
un-marks the stages after it): a failure or a kill leaves the last complete state untouched. Every
artifact records the config hash (and parameter spec) it was made for; loading checks it.
Under a multi-process launch every process runs every stage (training and evaluation are shared, see
`pdiff.distributed`), the main process alone writes, and all wait for each other after each stage.
"""

from __future__ import annotations

import copy
import csv
import io
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from . import distributed
from . import report as report_module
from .baselines import fine_tuned, gaussian_fit, mean_of_k, noise_added, weight_average
from .collect import CheckpointSet, collect, train_base
from .config import CHOICES, STAGES, Config, ConfigError, base_hash, resolve_device, stage_hash, to_dict, to_yaml
from .distributed import predict_many
from .evaluate import accuracy, labels_of
from .generator import ParameterGenerator
from .params import Normalizer, ParamSpec, SelectionError
from .runlock import run_lock
from .similarity import similarity_summary
from .store import ArtifactError, load_json, load_tensors, save_json, save_tensors, save_text
from .tasks.datasets import DataSplits, TensorLoader, augmentation, load_dataset
from .tasks.models import build_model

log = logging.getLogger(__name__)
STAGE_DIRS = {"collect": "collect", "train": "generator", "generate": "generate", "evaluate": "evaluate",
              "report": "report"}


class HealthError(RuntimeError):
    """The autoencoder cannot reproduce the checkpoints it was trained on."""


@dataclass
class Run:
    """One task's run directory and what its stages share (data, loaders, the base model)."""

    config: Config
    root: Path
    progress: bool = True
    seconds: dict[str, float] = field(default_factory=dict)
    writing: dict[str, Path] = field(default_factory=dict)  # stage -> its .partial folder while it runs
    device: torch.device = field(init=False)  # this process's device (its own GPU under a multi-process launch)

    def __post_init__(self) -> None:
        self.device = distributed.setup(resolve_device(self.config.device), self.config.precision)

    def stage_dir(self, stage: str) -> Path:
        return self.writing.get(stage, self.root / STAGE_DIRS[stage])

    def is_done(self, stage: str) -> bool:
        marker = self.stage_dir(stage) / "stage.json"
        if not marker.is_file():
            return False
        done = load_json(marker)
        return (done.get("hash") == stage_hash(self.config, stage)
                and all((self.stage_dir(stage) / name).is_file() for name in done.get("files", [])))

    @cached_property
    def data(self) -> DataSplits:
        d = self.config.data
        return load_dataset(d.name, d.data_dir, d.val_size, self.config.seed, d.num_samples, d.download,
                            d.image_size, self.progress)

    def loader(self, split: str) -> TensorLoader:
        return TensorLoader(getattr(self.data, split), self.config.data.eval_batch_size)

    def new_model(self) -> nn.Module:
        return build_model(self.config.model.name, self.data.input_shape, self.data.num_classes,
                           **self.config.model.kwargs)

    def base_model(self) -> nn.Module:
        """The trained base model read from collect/base.safetensors."""
        path = self.stage_dir("collect") / "base.safetensors"
        tensors, meta = load_tensors(path)
        self.check_made_for(path, meta, "collect")
        if not _weights_finite(tensors):
            raise ArtifactError(f"{path} contains NaN or Inf weights: rerun `pdiff collect --force`")
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
        path = self.stage_dir("collect") / "checkpoints.safetensors"
        ckpts, meta = CheckpointSet.load(path)
        self.check_made_for(path, meta, "collect")
        try:
            ckpts.spec.check(model)
        except SelectionError as e:
            raise ArtifactError(f"{path.name}: {e}; rerun `pdiff collect --force`") from None
        if ckpts.spec != ParamSpec.select(model, self.config.collect.subset):
            raise ArtifactError(f"{path.name} holds another parameter subset than collect.subset="
                                f"{self.config.collect.subset}: rerun `pdiff collect --force`")
        if len(ckpts) != self.config.collect.k:
            raise ArtifactError(f"{path.name} holds {len(ckpts)} checkpoints but collect.k={self.config.collect.k}: "
                                "the file was edited or cut short; rerun `pdiff collect --force`")
        return ckpts

    def metadata(self, stage: str) -> dict:
        return {"task": self.config.task, "config_hash": stage_hash(self.config, stage),
                "model": self.config.model.name, "seed": self.config.seed}

    def check_made_for(self, path: Path, meta: dict, stage: str) -> None:
        """Refuse an artifact of `stage` whose recorded config hash is not this config's."""
        expected = stage_hash(self.config, stage)
        if meta.get("config_hash") != expected:
            raise ArtifactError(f"{path.name} was made under another config (hash {meta.get('config_hash')}, "
                                f"this config {expected}): rerun `pdiff {stage} --force`")


def run_stage(run: Run, stage: str, force: bool = False) -> bool:
    """Run one stage unless it is already done for this config; returns whether it ran."""
    if not force and distributed.main_decides(run.is_done(stage)):
        log.info("%s: already done for this config, skipped (--force %s reruns it)", stage, stage)
        return False
    for before in STAGES[: STAGES.index(stage)]:
        if not run.is_done(before):
            raise ArtifactError(f"stage {stage!r} needs {before!r} first: run `pdiff {before}` (or `pdiff run`)")
    final = run.stage_dir(stage)
    partial = final.with_name(f".{final.name}.partial")
    main = distributed.is_main_process()  # the only process that touches files
    if main:
        shutil.rmtree(partial, ignore_errors=True)  # from an interrupted attempt
        partial.mkdir(parents=True)
    log.info("%s: running", stage)
    torch.manual_seed(run.config.seed)
    start = time.perf_counter()
    run.writing[stage] = partial
    try:
        extra = STAGE_FUNCTIONS[stage](run) or {}
        seconds = time.perf_counter() - start
        if main:
            files = sorted(p.name for p in partial.iterdir())
            save_json(partial / "stage.json",
                      {"hash": stage_hash(run.config, stage), "seconds": round(seconds, 2), "files": files, **extra})
    except BaseException:
        if main:
            shutil.rmtree(partial, ignore_errors=True)  # the last complete state stays as it was
        raise
    finally:
        del run.writing[stage]
    if main:
        _replace_stage_folder(run, stage, partial, final)
    run.seconds[stage] = seconds
    distributed.wait_for_everyone()  # the other processes read these files in the next stage
    log.info("%s: done in %.1f s", stage, seconds)
    return True


def _replace_stage_folder(run: Run, stage: str, partial: Path, final: Path) -> None:
    """Move a finished stage's folder into place; the stages after it were made from the old one."""
    old = final.with_name(f".{final.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    for after in STAGES[STAGES.index(stage) + 1:]:
        (run.stage_dir(after) / "stage.json").unlink(missing_ok=True)
    if final.exists():
        final.rename(old)
    partial.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def run_pipeline(config: Config, runs_dir: str | Path = "runs", force: str | None = None,
                 stages: tuple[str, ...] = STAGES, progress: bool = True) -> Run:
    """Take a task through `stages`; `force` reruns that stage and every stage after it."""
    if force is not None and force not in STAGES:
        raise ConfigError(f"--force {force!r}: choose one of {', '.join(STAGES)}")
    run = Run(config, Path(runs_dir) / config.task, progress)
    with run_lock(run.root):
        if distributed.is_main_process():
            for leftover in sorted(run.root.glob(".config.yaml.*.tmp")):  # from a process killed while writing
                leftover.unlink()
        save_text(run.root / "config.yaml", f"# hash: {stage_hash(config, 'report')}\n{to_yaml(config)}")
        for stage in stages:
            forced = force is not None and STAGES.index(stage) >= STAGES.index(force)
            run_stage(run, stage, force=forced)
    return run


# ---- the stages -----------------------------------------------------------------------------------
def collect_stage(run: Run) -> dict:
    cfg = run.config.collect
    generator = torch.Generator().manual_seed(run.config.seed)
    augment = augmentation(run.config.data.name, run.data.input_shape) if run.config.data.augment else None
    train_loader = TensorLoader(run.data.train, run.config.data.batch_size, shuffle=True, generator=generator,
                                augment=augment)
    model = run.new_model()
    spec = ParamSpec.select(model, cfg.subset)  # fail on a bad pattern before training
    base_meta = {**run.metadata("collect"), "input_shape": list(run.data.input_shape),
                 "num_classes": run.data.num_classes, "model_kwargs": run.config.model.kwargs,
                 "base_hash": base_hash(run.config)}
    previous = run.root / STAGE_DIRS["collect"] / "base.safetensors"  # of an earlier collection (other subset, K)
    if _load_reusable_base(model, previous, base_meta["base_hash"]):
        log.info("collect: reusing %s (same seed, data, model and base training)", previous)
        model.to(run.device).eval()
        for _ in range(cfg.epochs):  # replay base training's shuffles: collection sees a fresh run's batches
            for _ in train_loader:
                pass
    else:
        train_base(model, train_loader, cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, run.device,
                   run.progress)
    save_tensors(run.stage_dir("collect") / "base.safetensors", model.state_dict(),
                 {**base_meta, "spec": spec.to_dict()})
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


def _weights_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of a state_dict is free of NaN and Inf (integer buffers pass)."""
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def _load_reusable_base(model: nn.Module, path: Path, wanted_hash: str) -> bool:
    """Load a finished base model into `model` if it was trained the same way and is sound."""
    if not path.is_file():
        return False
    try:
        tensors, meta = load_tensors(path)
    except ArtifactError:  # corrupt: train anew
        return False
    expected = {name: t.shape for name, t in model.state_dict().items()}
    if (meta.get("base_hash") != wanted_hash or {n: t.shape for n, t in tensors.items()} != expected
            or not _weights_finite(tensors)):
        return False
    model.load_state_dict(tensors)
    return True


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
    gen = ParameterGenerator.load(run.stage_dir("train"), run.device, spec, stage_hash(run.config, "train"))
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
    path = run.stage_dir("generate") / "generated.safetensors"
    generated, meta = load_tensors(path)
    run.check_made_for(path, meta, "generate")
    if ParamSpec.from_dict(meta.get("spec", {"names": [], "shapes": []})) != ckpts.spec:
        raise ArtifactError("generated.safetensors was made for another parameter subset: "
                            "rerun `pdiff generate --force`")
    if "params" not in generated or not torch.isfinite(generated["params"]).all():
        raise ArtifactError(f"{path} holds no finite 'params': rerun `pdiff generate --force`")
    gen = ParameterGenerator.load(run.stage_dir("train"), run.device, ckpts.spec, stage_hash(run.config, "train"))
    groups, settings = model_groups(run, model, ckpts, generated["params"], gen.normalizer)
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
    predictions, vectors = torch.cat(test_rows), torch.cat(list(groups.values()))  # [M, n_test], [M, D]
    names = [r["group"] for r in records]
    results = {"task": run.config.task, "config_hash": stage_hash(run.config, "evaluate"),
               "seed": run.config.seed, "spec": ckpts.spec.to_dict(), "models": records,
               "summary": summarise(records), "baselines": settings,
               "similarity": similarity_summary(predictions, test_labels, names, gen.normalizer.normalize(vectors))}
    save_tensors(run.stage_dir("evaluate") / "predictions.safetensors",
                 {"predictions": predictions.to(torch.int16), "labels": test_labels},
                 {**run.metadata("evaluate"), "spec": ckpts.spec.to_dict()})
    save_tensors(run.stage_dir("evaluate") / "latents.safetensors", {"latents": gen.encode(vectors)},
                 {**run.metadata("evaluate"), "spec": ckpts.spec.to_dict()})  # row i = record i; for the report's t-SNE
    save_json(run.stage_dir("evaluate") / "results.json", results)
    return {}


def model_groups(run: Run, model: nn.Module, ckpts: CheckpointSet, generated: torch.Tensor,
                 normalizer: Normalizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Every group's parameter vectors in results.json order (config.BASELINES), and the baselines' settings.

    Order: original, ensemble, generated, noise@<strength> for each strength, finetune, mean_of_k, gaussian
    (those asked for in evaluate.baselines). Each baseline draws from its own generator seeded with the run's
    seed, so the noise groups start from the same checkpoints and differ only in strength.
    """
    cfg, params = run.config.evaluate, ckpts.params
    chosen, n = set(cfg.baselines), cfg.baseline_n or len(generated)

    def rng() -> torch.Generator:
        return torch.Generator().manual_seed(run.config.seed)

    groups = {"original": params}
    if "ensemble" in chosen:
        groups["ensemble"] = weight_average(params)
    groups["generated"] = generated
    settings: dict = {"n": n}
    if "noise" in chosen:
        for strength in cfg.noise_strengths:
            groups[f"noise@{strength:g}"] = noise_added(params, normalizer, strength, n, rng())
        settings["noise_strengths"] = list(cfg.noise_strengths)
    if "finetune" in chosen:
        collect_cfg = run.config.collect
        lr = cfg.finetune_lr or collect_cfg.subset_lr
        loader = TensorLoader(run.data.train, run.config.data.batch_size, shuffle=True, generator=rng())
        groups["finetune"] = fine_tuned(model, ckpts.spec, params, loader, cfg.finetune_steps, lr, n, rng(),
                                        "adamw" if collect_cfg.recipe == "iteration" else "sgd",
                                        collect_cfg.subset_weight_decay, run.device)
        settings["finetune"] = {"steps": cfg.finetune_steps, "lr": lr}
    if "mean_of_k" in chosen:
        k = min(cfg.mean_of_k, len(params))
        if k < cfg.mean_of_k:
            log.info("evaluate: mean_of_k averages all %d checkpoints (evaluate.mean_of_k=%d > collect.k)",
                     k, cfg.mean_of_k)
        groups["mean_of_k"] = mean_of_k(params, k, n, rng())
        settings["mean_of_k"] = k
    if "gaussian" in chosen:
        groups["gaussian"] = gaussian_fit(params, n, rng())
    return groups, settings


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
    if not distributed.is_main_process():
        return {}  # the report only writes files: nothing for the other processes to do
    path = run.stage_dir("evaluate") / "results.json"
    results = load_json(path)
    run.check_made_for(path, results, "evaluate")
    seconds = {s: load_json(run.stage_dir(s) / "stage.json").get("seconds") for s in STAGES[:-1]}
    latents, _ = load_tensors(run.stage_dir("evaluate") / "latents.safetensors")
    report_module.write_report(run.stage_dir("report"), results, to_dict(run.config), seconds,
                               latents=latents["latents"].numpy())
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
    if sampler not in CHOICES["generate.sampler"]:
        raise ConfigError(f"--sampler {sampler!r}: choose one of {', '.join(CHOICES['generate.sampler'])}")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give a positive number of sampling steps (or leave it out for all)")
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
        save_tensors(path, gen.spec.to_state_dict(vector, base),
                     {**meta, "spec": gen.spec.to_dict(), "sample_index": i, "seed": seed})
        paths.append(path)
    return paths
