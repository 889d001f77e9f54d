"""Where things live: the folder and file names of a run folder and of an export, and the data folder.

    runs/<task>/config.yaml, .lock
                collect/base.safetensors, checkpoints.safetensors
                train/autoencoder.safetensors, diffusion.safetensors, metrics.csv  (`generator/` before)
                train/generator-1/, ... the same files for generators 1.. (train.generators > 1)
                train/heldout.safetensors  (train.holdout_split=run: the second collection's held-out checkpoints)
                generate/generated.safetensors
                evaluate/results.json, predictions.safetensors
                report/report.md, report.html, *.png
    every stage folder also holds stage.json (written last: the stage is done)

This module imports nothing of pdiff, so every layer can name a file without importing the stage that writes it.
"""

from __future__ import annotations

import os
from pathlib import Path

# ---- a run folder ---------------------------------------------------------------------------------
RUN_CONFIG_FILE = "config.yaml"  # the config that made what the run folder holds
STAGE_FILE = "stage.json"  # in every stage folder, written last: the config hash it was made under
STAGE_FOLDERS = {"collect": "collect", "train": "train", "generate": "generate", "evaluate": "evaluate",
                 "report": "report"}
OLD_STAGE_FOLDERS = {"train": "generator"}  # what earlier pdiff versions named them, still read
BASE_FILE, CHECKPOINTS_FILE = "base.safetensors", "checkpoints.safetensors"  # collect/
AUTOENCODER_FILE, DIFFUSION_FILE, METRICS_FILE = "autoencoder.safetensors", "diffusion.safetensors", "metrics.csv"
HELDOUT_FILE = "heldout.safetensors"  # train/, with train.holdout_split=run
MEMBER_PREFIX = "generator-"  # train/generator-1/, ...: generators 1.. of a run with train.generators > 1
GENERATED_FILE = "generated.safetensors"  # generate/
RESULTS_FILE, PREDICTIONS_FILE = "results.json", "predictions.safetensors"  # evaluate/

# ---- an export (`pdiff export`, `save_pretrained`) and a samples folder (`pdiff sample`) -----------------
EXPORT_CONFIG_FILE, CARD_FILE = "config.json", "README.md"
SAMPLES_FILE = "samples.json"  # what `pdiff sample` wrote into --out: its marker


def stage_folder(run_dir: str | Path, stage: str) -> Path:
    """The folder of `stage` in `run_dir`: its current name, or the name an earlier pdiff gave it if only that
    one exists."""
    folder = Path(run_dir) / STAGE_FOLDERS[stage]
    old = Path(run_dir) / OLD_STAGE_FOLDERS.get(stage, STAGE_FOLDERS[stage])
    return old if not folder.exists() and old.is_dir() else folder


def model_file(i: int) -> str:
    """The i-th model `pdiff sample` writes: model_000.safetensors, ..."""
    return f"model_{i:03d}.safetensors"


# ---- the data folder ------------------------------------------------------------------------------
DEFAULT_DATA_DIR = Path("~/.cache/pdiff/data")  # where datasets live without data.data_dir or $PDIFF_DATA


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """`data_dir`, else $PDIFF_DATA, else ~/.cache/pdiff/data, as an absolute path."""
    chosen = data_dir or os.environ.get("PDIFF_DATA") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()
