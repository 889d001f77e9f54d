"""Artifact I/O: safetensors for tensors, JSON for everything else, always written atomically.

A file is written under a temporary name in its final folder and then renamed, so a crash never
leaves a half-written artifact behind. Metadata travels inside the safetensors header as one JSON
string, so every tensor file explains itself (spec, config hash, task) without pickle. Under a
multi-process launch only the main process writes (like accelerate's `Accelerator.save`); the others
return at once, and the pipeline holds them at a barrier until the files are there.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .distributed import is_main_process
from .errors import ArtifactError

METADATA_KEY = "pdiff"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write `tensors` (made contiguous, on CPU) with JSON `metadata` to `path` atomically."""
    if not is_main_process():
        return
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)})


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by `save_tensors`; a missing or corrupt file is an `ArtifactError`."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: run the stage that writes it first")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, ValueError, OSError) as e:
        raise ArtifactError(f"{path} is corrupt or not a pdiff file ({e}); delete it and rerun its stage") from e
    return tensors, metadata


def save_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    save_text(path, json.dumps(data, indent=2) + "\n")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: run the stage that writes it first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it and rerun its stage") from e


def save_text(path: str | Path, text: str) -> None:
    if not is_main_process():
        return
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_bytes(path: str | Path, data: bytes) -> None:
    if not is_main_process():
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
