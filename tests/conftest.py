"""Shared test set-up: one thread (tiny models run fastest so), tiny configs, the repo's MNIST copy, and the
tiny run made once per machine for every test file that reads one."""

import fcntl
import hashlib
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import pdiff
from pdiff.config import Config
from pdiff.pipeline import run_pipeline
from pdiff.presets import load_config

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Finished tiny runs, one folder per source tree (see `tiny_run`); the system temp folder outlives a test session.
TINY_RUN_CACHE = Path(tempfile.gettempdir()) / "pdiff-tests"

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


def source_key() -> str:
    """A hash of the pdiff source this session imports, this file (the tiny overrides, how the run is made),
    Python's and torch's versions: the tiny run is remade whenever any of them changes."""
    digest = hashlib.sha256(repr((sys.version, torch.__version__)).encode() + Path(__file__).read_bytes())
    package = Path(pdiff.__file__).parent
    for path in sorted(p for p in package.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def files_of(folder: Path) -> dict[str, list[int]]:
    """Every file under `folder` -> [size, mtime in ns]: what a test that wrote into the shared run changes."""
    return {str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns]
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_run() -> Path:
    """A finished tiny run of every stage, RUNS/mnist1d-convnet (read it, or copy it before changing anything).

    Made once per machine and source tree: the first session (or xdist worker) to ask builds it under a file
    lock into a hidden folder and renames it into place, the others wait for the lock and read it. Its file list
    is kept beside it, so a test that changed the shared run fails the next session that asks for it.
    """
    key = source_key()
    folder = TINY_RUN_CACHE / key
    TINY_RUN_CACHE.mkdir(parents=True, exist_ok=True)
    with open(TINY_RUN_CACHE / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also when this process is killed
        if not folder.is_dir():
            partial = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=TINY_RUN_CACHE))
            run_pipeline(tiny_config(), partial / "runs", progress=False)
            (partial / "files.json").write_text(json.dumps(files_of(partial / "runs")))
            partial.rename(folder)  # a killed build leaves only a hidden partial folder, never a half run here
    if json.loads((folder / "files.json").read_text()) != files_of(folder / "runs"):
        pytest.fail(f"the shared tiny run {folder} was changed by a test (copy it before changing it); delete the "
                    "folder to have it made again")
    return folder / "runs" / "mnist1d-convnet"


# The tiny run's model with LoRA adapters on two of its layers, the adapters generated.
TINY_ADAPTERS = ["model.name=mlp", "model.kwargs={hidden: [16, 8]}", "collect.subset=[adapters]", "task=mnist1d-lora",
                 "model.peft={target_modules: [net.1, net.4], r: 2}"]


@pytest.fixture(scope="session")
def tiny_adapter_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny run whose subset is LoRA adapters (`TINY_ADAPTERS`); read it, do not change it."""
    return run_pipeline(tiny_config(*TINY_ADAPTERS), tmp_path_factory.mktemp("adapters"), progress=False).root


def copy_stages(source: Path, target: Path, folders: tuple[str, ...]) -> Path:
    """A run folder `target` holding copies of `source`'s finished stage `folders` (to run the next stage alone)."""
    for folder in folders:
        shutil.copytree(source / folder, target / folder)
    return target


def write_checkpoints(run: Path, folder: Path, rows: dict[str, int], kind: str = "safetensors") -> list[Path]:
    """Checkpoints `rows` (name -> row) of the finished run `run`, as whole state_dicts (its base model with that
    row's subset) in `folder`: `kind` "safetensors", "pt", "wrapped" (a .pt of {"model": state_dict, "epoch": i})
    or "folder" (name/model.safetensors). Returns the paths, in the order given."""
    from safetensors.torch import save_file

    from pdiff.checkpoints import CheckpointSet
    from pdiff.store import load_tensors

    base, _ = load_tensors(run / "collect" / "base.safetensors")
    ckpts, _ = CheckpointSet.load(run / "collect" / "checkpoints.safetensors")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, row in rows.items():
        state = ckpts.spec.to_state_dict(ckpts.params[row], base)
        if kind == "folder":
            path = folder / name
            path.mkdir()
            save_file(state, str(path / "model.safetensors"))
        elif kind == "safetensors":
            path = folder / f"{name}.safetensors"
            save_file(state, str(path))
        else:
            path = folder / f"{name}.pt"
            torch.save({"model": state, "epoch": row} if kind == "wrapped" else state, path)
        paths.append(path)
    return paths


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
