"""Artifact I/O: safetensors for tensors, JSON for everything else, always written atomically.

A file is written under a temporary name in its final folder and then renamed, so a crash never
leaves a half-written artifact behind. It gets the mode `open()` would give it (0666 less the umask).
A full disk or a folder we may not write is a `StorageError` naming the path and the space needed.
Metadata travels inside the safetensors header as one JSON string, so every tensor file explains
itself (spec, config hash, task) without pickle. Under a multi-process launch only the main process
writes (like accelerate's `Accelerator.save`); the others return at once, and the pipeline holds them
at a barrier until the files are there. Which process is the main one is the launcher's business: it says so
through `write_only_where` (`pdiff.distributed.setup` does), so this module knows no launcher.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import ArtifactError, StorageError

METADATA_KEY = "pdiff"
_is_main: Callable[[], bool] = lambda: True  # noqa: E731 (replaced by `write_only_where`)


def write_only_where(is_main: Callable[[], bool]) -> None:
    """Write files only in the process where `is_main()` is true (the main process of a launch)."""
    global _is_main
    _is_main = is_main


def is_main_process() -> bool:
    """Whether this process writes files (see `write_only_where`)."""
    return _is_main()


# Write failures that the user fixes (space, quota, permissions), not bugs.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
                  errno.EISDIR, errno.EEXIST)


@contextmanager
def atomic_path(path: str | Path, size: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    `size` (bytes, if known) goes into the message when the disk is full.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        # mkstemp (and safetensors, which writes the file anew) make it 0600; open() would honour the umask
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, StorageError) or e.errno not in STORAGE_ERRNOS:
            raise
        raise storage_error(path, e, size) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def current_umask() -> int:
    """The process's umask: from /proc on Linux (reading it with os.umask means setting it, which races
    with other threads), else set and set straight back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def storage_error(path: Path, error: OSError, size: int | None = None) -> StorageError:
    """One line for a write that failed for lack of space or permission: the path, the cause and the fix."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        need = f" (it needs about {_megabytes(size)} more)" if size else ""
        return StorageError(f"cannot write {path}: no space left on the device{need}: free some space or "
                            "pass another --runs-dir / --out, then rerun (finished stages are kept)")
    return StorageError(f"cannot write {path} ({error.strerror or error}): fix the folder's permissions or pass "
                        "another --runs-dir / --out")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{max(1, size // 1024)} KiB"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> None:
    """Write `tensors` (made contiguous, on CPU) with JSON `metadata` to `path` atomically."""
    if not is_main_process():
        return
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    with atomic_path(path, size=sum(t.nbytes for t in tensors.values())) as tmp:
        try:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(metadata)})
        except SafetensorError as e:  # its I/O errors ("... (os error 28)") are no OSErrors: make them one
            code = re.search(r"\(os error (\d+)\)", str(e))
            if code is None:
                raise
            raise OSError(int(code[1]), os.strerror(int(code[1])), str(tmp)) from e


def load_tensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a file written by `save_tensors`; a missing or corrupt file is an `ArtifactError`.

    Floating tensors come back as float32, whatever they were saved as (float16, bfloat16 or float64
    checkpoints from other tools), since every stage computes in float32.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: run the stage that writes it first")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = json.loads((f.metadata() or {}).get(METADATA_KEY, "{}"))
            tensors = {name: _as_float32(f.get_tensor(name)) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, ValueError, OSError) as e:
        raise ArtifactError(f"{path} is corrupt or not a pdiff file ({e}); delete it and rerun its stage") from e
    return tensors, metadata


def _as_float32(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() and t.dtype != torch.float32 else t


def save_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically."""
    save_text(path, json.dumps(data, indent=2) + "\n")


def load_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} does not exist: run the stage that writes it first")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ArtifactError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); delete it and rerun its "
                            "stage") from None
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e}); delete it and rerun its stage") from e


def load_record(path: str | Path, keys: dict[str, type | tuple[type, ...]], fix: str) -> dict[str, Any]:
    """A JSON file that must hold an object with `keys` of the given types (a stage.json, a results.json).

    Anything else (a list, a missing key, a string where a number belongs) is one `ArtifactError` naming the
    file, what is wrong and `fix`, the step that writes the file anew.
    """
    return check_record(path, load_json(path), keys, fix)


def check_record(path: str | Path, data: Any, keys: dict[str, type | tuple[type, ...]], fix: str) -> dict[str, Any]:
    """`data`, read from the JSON file `path`, if it is an object with `keys` (see `load_record`)."""
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} holds a JSON {type(data).__name__}, not an object: {fix}")
    for key, kind in keys.items():
        if key not in data:
            raise ArtifactError(f"{path} has no {key!r}: {fix}")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(data[key], kinds) or isinstance(data[key], bool) and bool not in kinds:
            raise ArtifactError(f"{path}: {key!r} is a {type(data[key]).__name__}, not what pdiff wrote: {fix}")
    return data


def save_text(path: str | Path, text: str) -> None:
    if not is_main_process():
        return
    with atomic_path(path, size=len(text.encode())) as tmp:
        tmp.write_text(text)


def save_bytes(path: str | Path, data: bytes) -> None:
    if not is_main_process():
        return
    with atomic_path(path, size=len(data)) as tmp:
        tmp.write_bytes(data)


def check_format_version(path: str | Path, data: dict, newest: int) -> int:
    """The integer `format_version` of a JSON artifact (0 where an older pdiff wrote none); one written by a newer
    pdiff than this one, which reads up to `newest`, is refused."""
    found = data.get("format_version", 0)
    if not isinstance(found, int) or isinstance(found, bool) or found < 0:
        raise ArtifactError(f"{path}: format_version {found!r} is not a whole number: the file was edited; write "
                            "it again with pdiff")
    if found > newest:
        raise ArtifactError(f"{path} has format_version {found}, written by a newer pdiff than this one (which "
                            f"reads up to {newest}): upgrade pdiff (pip install -U pdiff)")
    return found
