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


def write_image_folder(root: Path, counts: dict[str, dict[str, int]], size: tuple[int, int] = (8, 8)) -> None:
    """An ImageFolder tree root/<split>/<class>/<i>.png|.jpg (even i PNG, odd i JPEG) of random colours.

    `counts` maps split -> class -> images, e.g. {"train": {"cat": 4, "dog": 4}, "test": {"cat": 2, "dog": 2}}.
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, classes in counts.items():
        for name, n in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)  # PIL arrays are [H, W, C]
                Image.fromarray(pixels).save(folder / f"{i:03d}.{'png' if i % 2 == 0 else 'jpg'}")
