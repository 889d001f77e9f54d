"""Stage 2, train: fit the parameter generator (autoencoder, then latent DDPM) on the run's checkpoints.

Between the two fits the health gate checks that the autoencoder's reconstructions keep the checkpoints'
validation accuracy: diffusion on the latents of a collapsed autoencoder could only make broken models.
Writes generator/autoencoder.safetensors, generator/diffusion.safetensors and generator/metrics.csv;
`load` reads the generator back, checked against the config and the parameter subset.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import torch
from torch import nn

from . import collect
from .checkpoints import CheckpointSet
from .errors import HealthError
from .generator import ParameterGenerator
from .hashing import config_hash, made_under
from .inference import accuracy_many
from .params import ParamSpec
from .store import save_text
from .tasks import Task
from .tasks.datasets import TensorLoader

log = logging.getLogger(__name__)
FOLDER = "generator"  # runs/<task>/generator/
CONFIG_SECTIONS = (*collect.CONFIG_SECTIONS, "train")  # the generator learns collect's checkpoints


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Fit the generator on the collected checkpoints (less train.holdout) and save it into `out`; returns the
    health figures."""
    collected = collect.load(task, run_dir)
    cfg = task.config.train
    ckpts, _ = collected.checkpoints.split(cfg.holdout, cfg.holdout_split)  # the held-out rows are never seen
    seed = task.config.seed if cfg.seed is None else cfg.seed  # train.seed: other generators, same checkpoints
    gen = ParameterGenerator(ckpts.spec, cfg, task.device, seed)
    gen.fit_autoencoder(ckpts, task.progress)
    health = check_reconstructions(gen, collected.model, ckpts, task.loader("val"), task.config.train.health_tolerance,
                                   task.config.evaluate.model_chunk, task.device)
    gen.fit_diffusion(ckpts, task.progress)
    gen.save(out, made_under(task.config, CONFIG_SECTIONS))
    save_text(out / "metrics.csv", _csv(gen.metrics))
    return {"health": health}


def load(task: Task, run_dir: Path, spec: ParamSpec) -> ParameterGenerator:
    """The generator of `run_dir`, checked to be trained under this config for `spec`."""
    return ParameterGenerator.load(run_dir / FOLDER, task.device, spec, config_hash(task.config, CONFIG_SECTIONS))


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


def differences_kept(x: torch.Tensor, reconstructed: torch.Tensor) -> float | None:
    """1 - |reconstructed - x|^2 / |x - mean(x)|^2 for checkpoints x [K, D] (standardised): the share of the
    checkpoints' variance about their mean that the reconstructions keep (1: all of it, 0: no better than
    decoding every checkpoint to the mean). None when the checkpoints do not differ."""
    spread = (x - x.mean(0)).pow(2).sum()
    if spread == 0:
        return None
    return 1 - ((reconstructed - x).pow(2).sum() / spread).item()


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else ["network", "step", "loss"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
