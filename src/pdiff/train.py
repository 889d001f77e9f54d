"""Stage 2, train: fit the parameter generator (autoencoder, then latent DDPM) on the run's checkpoints.

Between the two fits the health gate checks that the autoencoder's reconstructions keep the checkpoints'
validation accuracy: diffusion on the latents of a collapsed autoencoder could only make broken models.
Writes train/autoencoder.safetensors, train/diffusion.safetensors and train/metrics.csv (an earlier pdiff
named the folder generator/, still read); with train.generators = G > 1, generators 1..G-1 (seeds train.seed
+ s) in train/generator-s/ beside them, so that verdicts can speak for the method, not one trained generator.
With train.holdout_split=run it also collects the held-out checkpoints (a second collection from the same base
model, `collect.second_collection`) into train/heldout.safetensors: they are the generator's to never see, and
the train section holds their keys, so they are hashed with the generator. `load` reads generator 0 back,
`load_all` every one, checked against the config and the parameter subset; `split` gives any later stage the
checkpoints the generator learned and the held-out ones.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from . import checkpoint_files, collect
from .checkpoints import CheckpointSet
from .config import Config
from .errors import ArtifactError, HealthError, PdiffError
from .generator import ParameterGenerator, differences_kept
from .hashing import check_made_under, config_hash, made_under
from .inference import accuracy_many
from .layout import DIFFUSION_FILE, HELDOUT_FILE, MEMBER_PREFIX, METRICS_FILE, STAGE_FOLDERS, stage_folder
from .params import ParamSpec
from .store import load_tensors, save_text
from .task import Task
from .tasks.datasets import TensorLoader

log = logging.getLogger(__name__)
FOLDER = STAGE_FOLDERS["train"]  # runs/<task>/train/
CONFIG_SECTIONS = (*collect.CONFIG_SECTIONS, "train")  # the generator learns collect's checkpoints


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Fit train.generators generators on the collected checkpoints (less train.holdout) and save them into
    `out`; returns the health figures of each.

    Generator s is the one a run with train.generators=1 and train.seed = seed + s trains, stored in `out`
    (s = 0, where a single generator always was) or `out`/generator-s. One finished under the same config in
    the folder this stage replaces is kept instead of trained again, so raising train.generators trains only
    the new ones.
    """
    collected = collect.load(task, run_dir)
    cfg = task.config.train
    if cfg.holdout_split == "run" and cfg.holdout:
        ckpts = collected.checkpoints  # all of them: the held-out ones come from a second collection
        seed = task.config.seed + 1 if cfg.holdout_seed is None else cfg.holdout_seed
        heldout = collect.second_collection(task, collected.model, ckpts.spec, seed, cfg.holdout)
        heldout.save(out / HELDOUT_FILE, made_under(task.config, CONFIG_SECTIONS))
    else:
        ckpts, _ = collected.checkpoints.split(cfg.holdout, cfg.holdout_split)  # the held-out rows are never seen
        # (with train.holdout_from, train.holdout is 0: the generator learns every collected checkpoint)
    health = []
    for member in range(cfg.generators):
        config = member_config(task.config, member)
        folder = member_folder(out, member)
        folder.mkdir(exist_ok=True)
        previous = member_folder(stage_folder(run_dir, "train"), member)
        kept = _finished_member(previous, config, ckpts.spec, task)
        if kept is not None:
            log.info("train: generator %d is already trained under this config: kept", member)
            kept.save(folder, _member_metadata(task, config))
            save_text(folder / METRICS_FILE, (previous / METRICS_FILE).read_text())  # the main process writes
            health.append(None)
            continue
        seed = task.config.seed if config.train.seed is None else config.train.seed
        torch.manual_seed(task.config.seed)  # as the runner seeds each stage: generator s is a lone run's
        gen = ParameterGenerator(ckpts.spec, config.train, task.device, seed)
        gen.fit_autoencoder(ckpts, task.progress)
        health.append(check_reconstructions(gen, collected.model, ckpts, task.loader("val"), cfg.health_tolerance,
                                            task.config.evaluate.model_chunk, task.device))
        gen.fit_prior(ckpts, task.progress)
        gen.save(folder, _member_metadata(task, config))
        save_text(folder / METRICS_FILE, _csv(gen.metrics))
    return {"health": health[0]} if cfg.generators == 1 else {"health": health}


def split(task: Task, run_dir: Path, collected: collect.Collected) -> tuple[CheckpointSet, CheckpointSet | None]:
    """(the checkpoints the generator learned, the held-out ones or None) of the run's `collected` ones, as the
    train.holdout* keys chose them: a trajectory split of them, the second collection's (run), or every collected
    one and the files train.holdout_from matches (cut like collect.from's; the evaluate stage measures them)."""
    cfg, checkpoints = task.config.train, collected.checkpoints
    if cfg.holdout_from is not None:
        return checkpoints, checkpoint_files.checkpoints_from(cfg.holdout_from, collected.model, checkpoints.spec,
                                                              task.config.collect.state_dict_key,
                                                              "train.holdout_from")
    if cfg.holdout_split != "run" or not cfg.holdout:
        return checkpoints.split(cfg.holdout, cfg.holdout_split)
    path = stage_folder(run_dir, "train") / HELDOUT_FILE
    heldout, meta = CheckpointSet.load(path)
    check_made_under(task.config, CONFIG_SECTIONS, path, meta, "train")
    if heldout.spec != checkpoints.spec or heldout.test_predictions is None:
        raise ArtifactError(f"{path} holds no measured checkpoints of this run's subset: rerun `pdiff train --force`")
    return checkpoints, heldout


def member_config(config: Config, member: int) -> Config:
    """The config of generator `member` alone: train.generators=1 and train.seed = the generators' seed + member."""
    seed = (config.seed if config.train.seed is None else config.train.seed) + member
    train = replace(config.train, generators=1, seed=None if member == 0 and config.train.seed is None else seed)
    return replace(config, train=train)


def member_folder(folder: Path, member: int) -> Path:
    """Where generator `member` lives in a train folder: the folder itself for 0, else generator-<member>/."""
    return folder if member == 0 else folder / f"{MEMBER_PREFIX}{member}"


def _member_metadata(task: Task, config: Config) -> dict:
    return {**made_under(task.config, CONFIG_SECTIONS), "member_hash": config_hash(config, CONFIG_SECTIONS)}


def _finished_member(folder: Path, config: Config, spec: ParamSpec, task: Task) -> ParameterGenerator | None:
    """The generator in `folder` when it was trained under `config` (a single-generator run's files count)."""
    if not (folder / DIFFUSION_FILE).is_file() or not (folder / METRICS_FILE).is_file():
        return None
    try:
        _, meta = load_tensors(folder / DIFFUSION_FILE)
        if meta.get("member_hash", meta.get("config_hash")) != config_hash(config, CONFIG_SECTIONS):
            return None
        return ParameterGenerator.load(folder, task.device, spec)
    except PdiffError:  # unreadable or made for something else: train it again
        return None


def load(task: Task, run_dir: Path, spec: ParamSpec) -> ParameterGenerator:
    """Generator 0 of `run_dir`, checked to be trained under this config for `spec`."""
    return load_all(task, run_dir, spec)[0]


def load_all(task: Task, run_dir: Path, spec: ParamSpec) -> list[ParameterGenerator]:
    """Every generator of `run_dir` (train.generators of them), checked to be trained under this config."""
    folder = stage_folder(run_dir, "train")
    expected = config_hash(task.config, CONFIG_SECTIONS)
    return [ParameterGenerator.load(member_folder(folder, s), task.device, spec, expected)
            for s in range(task.config.train.generators)]


def check_reconstructions(gen: ParameterGenerator, model: nn.Module, ckpts: CheckpointSet, val_loader: TensorLoader,
                          tolerance: float, chunk: int = 50, device: torch.device | str = "cpu") -> dict:
    """The health gate: decoded checkpoints must keep the originals' validation accuracy (within tolerance).

    The originals' accuracy is the one the collection measured (`ckpts.val_accuracy`); only the
    reconstructions are evaluated here. It also reports the share of the checkpoints' differences the
    reconstructions keep, and warns when it is under half: an autoencoder that decodes every checkpoint to
    their average passes the accuracy bar (the average is often better than each checkpoint), but then every
    generated model is that average.
    """
    original = ckpts.val_accuracy.mean()
    reconstructions = gen.reconstruct(ckpts.params)
    rebuilt = accuracy_many(model, ckpts.spec, reconstructions, val_loader, chunk, device).mean()
    kept = differences_kept(gen.normalizer.normalize(ckpts.params), gen.normalizer.normalize(reconstructions))
    health = {"original_val_accuracy": original.item(), "reconstructed_val_accuracy": rebuilt.item(),
              "differences_kept": kept}
    log.info("train: autoencoder reconstructions keep %.2f%% val accuracy (originals %.2f%%)",
             100 * rebuilt, 100 * original)
    if kept is not None and kept < 0.5:
        log.warning("train: the reconstructions keep only %.0f%% of how the checkpoints differ from their mean, so "
                    "generated models will sit near the checkpoints' average; try train.autoencoder.standardise="
                    "deviation or a larger train.autoencoder.latent_dim", 100 * kept)
    if original - rebuilt > tolerance:
        raise HealthError(
            f"the autoencoder's reconstructions reach {100 * rebuilt:.1f}% mean val accuracy against "
            f"{100 * original:.1f}% for the checkpoints: it has collapsed; raise train.autoencoder.steps, "
            "lower train.autoencoder.latent_noise or try train.autoencoder.arch=mlp")
    return health


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["network", "step", "loss"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
