"""Shared test set-up: one thread (tiny models run fastest so), tiny configs, the repo's MNIST copy."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pdiff.config import Config, load_config
from pdiff.pipeline import run_pipeline

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

TINY = [
    "data.num_samples=1500", "data.val_size=200", "collect.epochs=2", "collect.k=12",
    "train.autoencoder.steps=150", "train.autoencoder.kwargs={hidden: 64}", "train.autoencoder.latent_dim=8",
    "train.diffusion.steps=150", "train.diffusion.kwargs={width: 32, depth: 2}",
    "generate.n=6", "generate.sampler=ddim", "generate.steps=10", "train.health_tolerance=1.0",
]


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread, and do not stall when another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(*overrides: str, task: str = "mnist1d-convnet") -> Config:
    """The default task shrunk to seconds: a few hundred examples, 12 checkpoints, 150 steps each."""
    return load_config(task, [*TINY, *overrides])


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished tiny run of every stage (read it, or copy it before changing anything)."""
    return run_pipeline(tiny_config(), tmp_path_factory.mktemp("tiny_run"), progress=False).root


def copy_stages(source: Path, target: Path, folders: tuple[str, ...]) -> Path:
    """A run folder `target` holding copies of `source`'s finished stage `folders` (to run the next stage alone)."""
    for folder in folders:
        shutil.copytree(source / folder, target / folder)
    return target
