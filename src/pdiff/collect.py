"""Stage 1, collect: train a base model, then keep training only the chosen subset and save K checkpoints of it.

Two recipes from the official code (docs/design.md, "Following the paper"): "epoch" (v1) trains the subset with SGD at
a small lr and saves once per epoch; "iteration" (v2) trains it with AdamW at a constant lr and saves
after every step. Everything else stays frozen and the model stays in eval mode, so BatchNorm running
statistics remain those of the base model.

The stage (`run`) writes collect/base.safetensors (the whole trained base model) and
collect/checkpoints.safetensors (params [K, D], their val / test accuracy [K] and test predictions
[K, n_test]); `load` reads both back, checked against the config. With collect.runs = R > 1 it trains R bases
from independent seeds and collects K / R checkpoints of the whole network along each (their run in `runs` [K]),
aligned into run 0's basis with collect.align=weights (pdiff.alignment).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint_files, distributed
from .adapters import check_same_adapter, read_adapter
from .alignment import align_runs, distance_across_runs, fold_batchnorm, permutation_groups
from .checkpoints import CheckpointSet
from .config import RECIPES, checkpoint_count
from .errors import ArtifactError, ConfigError, SelectionError, TrainingError
from .hashing import base_hash, check_made_under, config_hash, made_under
from .inference import accuracy, predict_many
from .layout import BASE_FILE, CHECKPOINTS_FILE, STAGE_FILE, STAGE_FOLDERS
from .params import ParamSpec
from .store import load_record, load_tensors, save_tensors
from .task import Task
from .tasks.datasets import TensorLoader, augmentation, pairs

log = logging.getLogger(__name__)
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
FOLDER = STAGE_FOLDERS["collect"]  # runs/<task>/collect/
# The config sections collect's output depends on; precision changes training (bf16 autocast), so it is hashed
# here and reaches every later stage.
CONFIG_SECTIONS = ("seed", "precision", "data", "model", "collect")


def train_base(model: nn.Module, loader: Batches, epochs: int, lr: float = 0.1, momentum: float = 0.9,
               weight_decay: float = 5e-4, device: torch.device | str = "cpu", progress: bool = True) -> nn.Module:
    """Train every parameter that requires grad with SGD and a cosine lr decay (the paper's base recipe).

    Under a multi-process launch each process trains a DDP copy on its share of `loader`'s batches.
    """
    accelerator = distributed.accelerator()
    loader = distributed.shard(loader)
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    ddp_model, optimizer = accelerator.prepare(model, optimizer)
    for epoch in distributed.progress_bar(range(epochs), progress, desc="train base"):
        for x, y in pairs(loader):
            _step(ddp_model, optimizer, x.to(device), y.to(device), f"base training, epoch {epoch}", "lower collect.lr")
            scheduler.step()
    distributed.release(ddp_model)
    distributed.broadcast_buffers(model)  # every process keeps the BatchNorm statistics the main one saves
    return model.eval()


def collect_checkpoints(model: nn.Module, loader: Batches, spec: ParamSpec, k: int = 200, recipe: str = "epoch",
            lr: float = 0.001, weight_decay: float = 5e-4, device: torch.device | str = "cpu",
            progress: bool = True) -> CheckpointSet:
    """Train only `spec`'s parameters of a trained model and save them K times -> CheckpointSet.

    The model's other parameters and buffers are left untouched; its subset ends at the last checkpoint.
    Under a multi-process launch DDP syncs the subset's gradients only (the frozen rest has none), each
    process trains on its share of the batches, and every process holds the same checkpoints.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe={recipe!r}: choose one of {', '.join(RECIPES)}")
    if k < 1:
        raise ValueError(f"k={k} must be at least 1")
    spec.check(model)
    accelerator = distributed.accelerator()
    loader = distributed.shard(loader)
    model.to(device).eval()  # eval: BatchNorm keeps the base model's running statistics
    params = dict(model.named_parameters())
    was_trainable = {name: p.requires_grad for name, p in params.items()}
    for name, p in params.items():
        p.requires_grad_(name in spec.names)
    subset = [params[name] for name in spec.names]
    if recipe == "epoch":
        optimizer = torch.optim.SGD(subset, lr=lr, momentum=0.9, weight_decay=weight_decay)
    else:
        optimizer = torch.optim.AdamW(subset, lr=lr, weight_decay=weight_decay)
    ddp_model, optimizer = accelerator.prepare(model, optimizer)  # DDP wraps what requires grad: the subset

    checkpoints: list[torch.Tensor] = []
    bar = distributed.progress_bar(show=progress, total=k, desc=f"collect ({recipe})")
    try:
        for epoch in range(k if recipe == "epoch" else math.ceil(k / len(loader))):
            for x, y in pairs(loader):
                _step(ddp_model, optimizer, x.to(device), y.to(device), f"collection, epoch {epoch}",
                      "lower collect.subset_lr")
                if recipe == "iteration" and len(checkpoints) < k:
                    checkpoints.append(spec.flatten(model).cpu())
                    bar.update()
            if recipe == "epoch":
                checkpoints.append(spec.flatten(model).cpu())
                bar.update()
    finally:
        bar.close()
        distributed.release(ddp_model)
        for name, p in params.items():
            p.requires_grad_(was_trainable[name])
    return CheckpointSet(torch.stack(checkpoints), spec)


collect = collect_checkpoints  # the name of earlier versions


def _step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, where: str,
          fix: str) -> None:
    """One cross-entropy step; a non-finite loss stops training with `fix` in the message."""
    logits = model(x)
    if not isinstance(logits, torch.Tensor):
        raise TrainingError(f"the model's forward returned a {type(logits).__name__}, not a tensor of class "
                            "scores [B, classes]: wrap the model so that forward returns the logits alone")
    loss = F.cross_entropy(logits, y)
    _check_finite(loss, where, fix)
    optimizer.zero_grad(set_to_none=True)
    distributed.accelerator().backward(loss)
    optimizer.step()


def _check_finite(loss: torch.Tensor, where: str, fix: str) -> None:
    if not distributed.all_finite(loss):
        raise TrainingError(f"loss became {loss.item()} during {where}: {fix}")


# ---- the stage ------------------------------------------------------------------------------------
@dataclass
class Collected:
    """What the collect stage leaves: the base model (on the task's device, eval mode) and its checkpoints."""

    model: nn.Module
    checkpoints: CheckpointSet


def run(task: Task, run_dir: Path, out: Path, base: Path | None = None) -> dict:
    """Train (or reuse, or read) the base model, collect (or read) K checkpoints, evaluate them once; write both
    files into `out`.

    `base`: a base model file to reuse if it was trained exactly as this config asks (default: the one this
    run folder already holds, from a collection of another subset or K). collect.base gives the user's own base
    model instead; collect.from reads the checkpoints from the user's files (the first is the base without
    collect.base), which `pdiff.checkpoint_files` checks against the model. With model.peft the subset lives in
    the model wrapped with LoRA adapters (`Task.adapt`), and collect.from may give PEFT adapter folders. With
    collect.runs > 1, see `_runs`.
    """
    cfg = task.config.collect
    model = task.new_model()
    spec = ParamSpec.select(task.adapt(model), cfg.subset)  # fail on a bad pattern before training
    base_meta = {**made_under(task.config, CONFIG_SECTIONS), "input_shape": list(task.data.input_shape),
                 "num_classes": task.data.num_classes, "model_kwargs": task.config.model.kwargs,
                 "base_hash": base_hash(task.config), "data": task.data_identity,
                 **(task.data.input_format.to_dict() if task.data.input_format else {}),
                 **({} if task.config.model.peft is None else {"peft": task.config.model.peft})}
    paths = None if cfg.from_ is None else checkpoint_files.find(cfg.from_, "collect.from")
    given = checkpoint_files.find_one(cfg.base, "collect.base") if cfg.base is not None else paths and paths[0]
    summary = {"dim": spec.dim, "names": list(spec.names)}
    if paths is not None:
        _check_adapter_folders(task, paths, given)
    if given:
        load_given_base(model, given, cfg.state_dict_key)
        base_meta["base_hash"] = None  # not trained by pdiff: never reused as a trained base
        summary["base_file"] = str(given.resolve())
    if paths is not None:
        model = task.adapt(model)
        save_tensors(out / BASE_FILE, model.state_dict(), {**base_meta, "spec": spec.to_dict()})
        ckpts = checkpoint_files.checkpoints_from(cfg.from_, model, spec, cfg.state_dict_key)
        summary["checkpoint_files"] = [str(path.resolve()) for path in paths]
    elif cfg.runs > 1:
        model, ckpts, runs_summary = _runs(task, out, base_meta)
        summary.update(runs_summary)
    else:
        model, ckpts = _collect(task, run_dir, out, model, spec, base_meta, base, trained=bool(given))
    model.to(task.device).eval()
    _measure(task, model, ckpts)
    ckpts.save(out / CHECKPOINTS_FILE, base_meta)
    log.info("collect: %d checkpoints of %d parameters, val accuracy %.2f-%.2f%%", len(ckpts), spec.dim,
             100 * ckpts.val_accuracy.min(), 100 * ckpts.val_accuracy.max())
    return summary


def _collect(task: Task, run_dir: Path, out: Path, model: nn.Module, spec: ParamSpec, base_meta: dict,
             base: Path | None, trained: bool) -> tuple[nn.Module, CheckpointSet]:
    """pdiff's own collection: train the base model unless it is `trained` already (or reusable), save it into
    `out` and collect collect.k checkpoints from it; returns the model the subset lives in and the checkpoints.

    Base training: the model on data.pretrain's examples (`Task.pretrain`), then with model.peft its adapters
    alone on the task's (PEFT freezes the rest), also from a given base.
    """
    cfg = task.config.collect
    train_loader = _train_loader(task, task.config.seed)
    pretrain_loader = train_loader if task.config.data.pretrain is None else TensorLoader(
        task.pretrain, task.config.data.batch_size, shuffle=True, generator=train_loader.generator,
        augment=augmentation(task.config.data.pretrain, task.data.input_shape) if task.config.data.augment else None)
    adapted = task.adapt(model)  # model itself, or (model.peft) a copy with LoRA adapters: where the subset lives
    phases = [] if trained else [pretrain_loader]
    phases += [] if adapted is model else [train_loader]
    base = base if base is not None else run_dir / FOLDER / BASE_FILE
    if not trained and _load_reusable_base(adapted, base, base_meta):
        log.info("collect: reusing %s (same seed, data, model and base training)", base)
        for loader in phases:  # replay base training's shuffles: collection sees a fresh run's batches
            for _ in range(cfg.epochs):
                for _ in loader:
                    pass
    else:
        if not trained:
            train_base(model, pretrain_loader, cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, task.device,
                       task.progress)
        if adapted is not model:
            adapted = train_base(task.adapt(model), train_loader, cfg.epochs, cfg.lr, cfg.momentum,
                                 cfg.weight_decay, task.device, task.progress)
    adapted.to(task.device).eval()
    save_tensors(out / BASE_FILE, adapted.state_dict(), {**base_meta, "spec": spec.to_dict()})
    return adapted, collect_checkpoints(copy.deepcopy(adapted), train_loader, spec, cfg.k, cfg.recipe,
                                        cfg.subset_lr, cfg.subset_weight_decay, task.device, task.progress)


def _check_adapter_folders(task: Task, paths: list[Path], given: Path | bool) -> None:
    """PEFT adapter folders in collect.from need model.peft (their config: `adapters.check_same_adapter`) and a
    base model from collect.base, since an adapter holds no base."""
    folders = [path for path in paths if checkpoint_files.is_adapter_folder(path)]
    if not folders:
        return
    if task.config.model.peft is None:
        raise ConfigError(f"collect.from gives PEFT adapter folders ({folders[0]}) but the model has no adapters: "
                          f"set model.peft to their LoRA config (e.g. target_modules and r of {folders[0]}/"
                          "adapter_config.json) and collect.subset=[adapters]")
    if given in folders:
        raise ConfigError("collect.from gives PEFT adapter folders, which hold no base model: give the trained "
                          "model they adapt with collect.base")
    for folder in folders:
        check_same_adapter(read_adapter(folder)[0], task.config.model.peft, folder)


def load_given_base(model: nn.Module, path: Path, state_dict_key: str | None = None) -> None:
    """Load the user's base model (a whole state_dict at `path`, checked against `model`) into `model`."""
    tensors = checkpoint_files.read_state_dict(path, "collect.base", state_dict_key)
    checkpoint_files.check_against(tensors, model.state_dict(), path)
    if not weights_finite(tensors):
        raise ArtifactError(f"{path} contains NaN or Inf weights: give a base model whose weights are finite")
    model.load_state_dict(tensors)


def _runs(task: Task, out: Path, base_meta: dict) -> tuple[nn.Module, CheckpointSet, dict]:
    """collect.runs independent runs (run r: initialisation and batch order from seed + r; run 0 is the lone run's
    base), K / runs checkpoints of the whole network along each, their BatchNorm statistics folded into the
    parameters so that run 0's folded base serves them all, then (collect.align=weights) every run permuted into
    run 0's basis. Returns run 0's base, the checkpoints and the runs' mean distance before and after alignment."""
    cfg = task.config.collect
    params, runs = [], []
    for r in range(cfg.runs):
        torch.manual_seed(task.config.seed + r)  # the runner seeds each stage so: run 0 is the lone run's
        loader = _train_loader(task, task.config.seed + r)
        model = task.new_model()
        spec = ParamSpec.select(model, cfg.subset)
        train_base(model, loader, cfg.epochs, cfg.lr, cfg.momentum, cfg.weight_decay, task.device, task.progress)
        ckpts = collect_checkpoints(copy.deepcopy(model), loader, spec, cfg.k // cfg.runs, cfg.recipe,
                                    cfg.subset_lr, cfg.subset_weight_decay, task.device, task.progress)
        state = {name: t.cpu() for name, t in model.state_dict().items()}
        params.append(torch.stack([spec.flatten(fold_batchnorm(model, spec.to_state_dict(p, state)))
                                   for p in ckpts.params]))
        runs += [r] * len(ckpts)
        if r == 0:
            base_model, base_state = model, fold_batchnorm(model, state)
    base_model.load_state_dict(base_state)
    save_tensors(out / BASE_FILE, base_model.state_dict(), {**base_meta, "spec": spec.to_dict()})
    params, runs = torch.cat(params), torch.tensor(runs)
    before = distance_across_runs(params, runs)
    if cfg.align == "weights":
        params = align_runs(permutation_groups(base_model), spec.unflatten, spec.flatten, params, runs)
    after = distance_across_runs(params, runs)
    log.info("collect: %d runs, mean distance between checkpoints of different runs %.4g (aligned: %.4g)",
             cfg.runs, before, after)
    return base_model, CheckpointSet(params, spec, runs=runs), {
        "runs": cfg.runs, "align": cfg.align, "distance_across_runs": {"before": before, "after": after}}


def second_collection(task: Task, model: nn.Module, spec: ParamSpec, seed: int, keep: int) -> CheckpointSet:
    """`keep` checkpoints spread along a second collection of collect.k from the base `model` (its subset where
    base training left it), whose batches are drawn with `seed`, measured as the run's are: the held-out
    checkpoints of train.holdout_split=run, another draw of the process that made the run's checkpoints."""
    cfg = task.config.collect
    ckpts = collect_checkpoints(copy.deepcopy(model), _train_loader(task, seed), spec, cfg.k, cfg.recipe,
                                cfg.subset_lr, cfg.subset_weight_decay, task.device, task.progress)
    _, kept = ckpts.split(keep, "interleaved")  # every (K/keep)-th, as the interleaved split holds out
    _measure(task, model, kept)
    return kept


def _train_loader(task: Task, seed: int) -> TensorLoader:
    """The training batches of base training and collection, shuffled (and augmented) from `seed`."""
    data = task.config.data
    augment = augmentation(data.name, task.data.input_shape) if data.augment else None
    return TensorLoader(task.data.train, data.batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed), augment=augment)


def _measure(task: Task, model: nn.Module, ckpts: CheckpointSet) -> None:
    """Fill in the checkpoints' val / test accuracy [K] and test predictions [K, n_test] (int16), once."""
    val_pred, test_pred = (predict_many(model, ckpts.spec, ckpts.params, task.loader(split),
                                        task.config.evaluate.model_chunk, task.device,
                                        desc=task.bar(f"evaluate {len(ckpts)} checkpoints ({split})"))
                           for split in ("val", "test"))
    ckpts.val_accuracy = accuracy(val_pred, task.labels("val"))
    ckpts.test_accuracy = accuracy(test_pred, task.labels("test"))
    ckpts.test_predictions = test_pred.to(torch.int16)


def load(task: Task, run_dir: Path) -> Collected:
    """The base model and checkpoints of `run_dir`, checked against the task's config, model and subset."""
    model = load_base(task, run_dir)
    return Collected(model, load_checkpoints(task, run_dir, model))


def load_base(task: Task, run_dir: Path) -> nn.Module:
    """The trained base model read from collect/base.safetensors, on the task's device in eval mode."""
    path = run_dir / FOLDER / BASE_FILE
    tensors, meta = load_tensors(path)
    check_made_under(task.config, CONFIG_SECTIONS, path, meta, "collect")
    if not weights_finite(tensors):
        raise ArtifactError(f"{path} contains NaN or Inf weights: rerun `pdiff collect --force`")
    model = task.adapt(task.new_model())
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ArtifactError(f"base.safetensors was saved from model {meta.get('model')!r}, not from this "
                            f"task's {task.config.model.name!r} ({str(e).splitlines()[0]}): rerun "
                            "`pdiff collect --force`") from None
    return model.to(task.device).eval()


def load_checkpoints(task: Task, run_dir: Path, model: nn.Module) -> CheckpointSet:
    """The collected checkpoints, checked against `model` (the base model) and the task's config."""
    path = run_dir / FOLDER / CHECKPOINTS_FILE
    ckpts, meta = CheckpointSet.load(path)
    check_made_under(task.config, CONFIG_SECTIONS, path, meta, "collect")
    try:
        ckpts.spec.check(model)
    except SelectionError as e:
        raise ArtifactError(f"{path.name}: {e}; rerun `pdiff collect --force`") from None
    if ckpts.spec != ParamSpec.select(model, task.config.collect.subset):
        raise ArtifactError(f"{path.name} holds another parameter subset than collect.subset="
                            f"{task.config.collect.subset}: rerun `pdiff collect --force`")
    k = checkpoint_count(task.config)
    if len(ckpts) != k:
        asked = f"collect.k={k}" if task.config.collect.from_ is None else f"collect.from matches {k} files"
        raise ArtifactError(f"{path.name} holds {len(ckpts)} checkpoints but {asked}: the file was edited or cut "
                            "short; rerun `pdiff collect --force`")
    if ckpts.test_predictions is None or ckpts.val_accuracy is None:
        raise ArtifactError(f"{path.name} holds no evaluation of its checkpoints (an older pdiff made it): "
                            "rerun `pdiff collect --force`")
    return ckpts


def first_k(task: Task, source: Path, out: Path) -> dict:
    """Write into `out` the first collect.k checkpoints of the run folder `source` (a prefix of one trajectory:
    both recipes save checkpoints in order), under this config's hash; returns the stage summary."""
    k = task.config.collect.k
    ckpts, meta = CheckpointSet.load(source / FOLDER / CHECKPOINTS_FILE)
    meta = {**meta, "config_hash": config_hash(task.config, CONFIG_SECTIONS)}
    meta.pop("spec")
    ckpts.rows(slice(0, k)).save(out / CHECKPOINTS_FILE, meta)
    base, base_meta = load_tensors(source / FOLDER / BASE_FILE)
    save_tensors(out / BASE_FILE, base, {**base_meta, "config_hash": meta["config_hash"]})
    summary = load_record(source / FOLDER / STAGE_FILE, {"dim": int, "names": list}, "rerun `pdiff collect --force`")
    return {"dim": summary["dim"], "names": summary["names"], "first_k_of": str(source / FOLDER)}


def weights_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether every floating-point tensor of a state_dict is free of NaN and Inf (integer buffers pass)."""
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


def _load_reusable_base(model: nn.Module, path: Path, wanted: dict) -> bool:
    """Load a finished base model into `model` if it was trained the same way (the base_hash of `wanted`) on the
    same data (its `data`: an image folder's contents) and is sound."""
    if not path.is_file():
        return False
    try:
        tensors, meta = load_tensors(path)
    except ArtifactError:  # corrupt: train anew
        return False
    expected = {name: t.shape for name, t in model.state_dict().items()}
    if (meta.get("base_hash") != wanted["base_hash"] or meta.get("data") != wanted["data"]
            or {n: t.shape for n, t in tensors.items()} != expected or not weights_finite(tensors)):
        return False
    model.load_state_dict(tensors)
    return True
