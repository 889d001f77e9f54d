"""Output folders written whole or not at all, and never over what pdiff did not write: `atomic_folder`.

A folder is filled as `.<name>.partial` beside its final place and then swapped in. On Linux one
renameat2(RENAME_EXCHANGE) swaps the new folder with the old one, so `out` is at every instant either the old
complete folder or the new one, even under kill -9; where that call is missing (another OS, a file system without
it) the old folder is renamed to `.<name>.old` first, and the next call on `out` puts it back if the process died
between the two renames. While it writes, the call holds `.<name>.lock` beside `out`, so a second call on the
same folder stops with one line instead of mixing the two calls' files.

A folder pdiff shares with its user (an export, `pdiff sample --out`) carries a marker: a JSON file holding
library_name "pdiff", its kind and the files pdiff wrote. Such a folder is replaced only when it carries the
marker of the same kind and the caller passes `force`; any other file in it is the user's and is kept (linked
into the new folder). A non-empty folder without the marker is refused.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import ArtifactError, ConfigError, StorageError
from .runlock import file_lock
from .store import STORAGE_ERRNOS, load_json, save_json, storage_error

LIBRARY = "pdiff"
_RENAME_EXCHANGE, _AT_FDCWD = 2, -100  # linux/fs.h, fcntl.h


@dataclass(frozen=True)
class Marker:
    """How pdiff recognises a folder it wrote: `file` (JSON) holds library_name pdiff and `kind`; `what` names the
    folder in messages ("pdiff generator export")."""

    file: str
    kind: str
    what: str


@contextmanager
def atomic_folder(out: str | Path, marker: Marker | None = None, force: bool = False, option: str = "--out",
                  lock: bool = True) -> Iterator[Path]:
    """Yield an empty folder to fill; on success it replaces `out` in one step, on failure it is removed.

    `marker`: `out` is shared with the user (see the module docstring); the block must write `marker.file`, and
    the list of files it wrote is added to it. Without a marker `out` belongs to pdiff alone (a stage folder).
    `option` names the command-line option that chose `out`, in the one-line errors; `lock=False` where the
    caller holds a lock on the folder around `out` already (the run lock).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file, not a folder: give a folder")
    partial, old = _beside(out, "partial"), _beside(out, "old")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _storage(out, e) from None
    with file_lock(_beside(out, "lock"), str(out), option) if lock else _nothing():
        _recover(out, partial, old)
        kept = _user_files(out, marker, force) if marker else []
        try:
            partial.mkdir()
            yield partial
            if marker:
                _record_files(partial, marker)
                _keep(out, kept, partial)
            _swap(partial, out, old)
        except OSError as e:
            if isinstance(e, StorageError) or e.errno not in STORAGE_ERRNOS:
                raise
            raise _storage(out, e) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)  # the new folder of a failure, or the old one after a swap
            shutil.rmtree(old, ignore_errors=True)


def owned_by_pdiff(folder: Path, marker: Marker) -> dict | None:
    """The marker's content if `folder` carries `marker` (pdiff wrote it, and it is of that kind), else None."""
    path = folder / marker.file
    try:
        data = load_json(path) if path.is_file() else None
    except ArtifactError:
        return None
    if not isinstance(data, dict) or data.get("library_name") != LIBRARY or data.get("kind") != marker.kind:
        return None
    return data


def _beside(out: Path, what: str) -> Path:
    return out.with_name(f".{out.name}.{what}")


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _recover(out: Path, partial: Path, old: Path) -> None:
    """Undo what a killed call left: its old folder comes back if the new one never arrived; the rest goes."""
    if old.is_dir() and not out.exists():
        os.rename(old, out)
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _user_files(out: Path, marker: Marker, force: bool) -> list[str]:
    """The names in `out` pdiff did not write (kept through the replacement); refuses what must not be replaced."""
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if not entries:
        return []
    data = owned_by_pdiff(out, marker)
    if data is None:
        raise ArtifactError(f"{out} is not empty and holds no {marker.what} (it has {entries[0]}): pdiff replaces "
                            "only what it wrote; give a new or empty folder")
    if not force:
        raise ArtifactError(f"{out} holds an earlier {marker.what}: pass --force to replace it, or give another "
                            "folder")
    ours = set(data["files"]) if isinstance(data.get("files"), list) else {
        name for name in entries if name.endswith((".safetensors", ".json", ".md", ".csv"))}  # before the list
    return [name for name in entries if name not in ours and name != marker.file]


def _record_files(partial: Path, marker: Marker) -> None:
    path = partial / marker.file
    data = load_json(path)
    assert isinstance(data, dict) and data.get("kind") == marker.kind, f"the block must write {marker.file}"
    save_json(path, {**data, "files": sorted({p.name for p in partial.iterdir()} | {marker.file})})


def _keep(out: Path, names: list[str], partial: Path) -> None:
    """Hard-link the user's files of `out` into the new folder (the old ones stay until the swap)."""
    for name in names:
        source, target = out / name, partial / name
        if target.exists():
            raise ArtifactError(f"{source} was not written by pdiff, and the new files would replace it: move it "
                                "away, or give another folder")
        if source.is_dir() and not source.is_symlink():
            shutil.copytree(source, target, symlinks=True, copy_function=_link)
        else:
            _link(source, target)


def _link(source: str | Path, target: str | Path) -> None:
    if Path(source).is_symlink():
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap(partial: Path, out: Path, old: Path) -> None:
    """Put `partial` at `out`; the old `out` (if any) ends at `partial` (one exchange) or at `old` (two renames)."""
    if not out.exists():
        os.rename(partial, out)
    elif not _exchange(partial, out):
        os.rename(out, old)
        os.rename(partial, out)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2); False where this system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _storage(out: Path, e: OSError) -> Exception:
    return storage_error(out, e) if e.errno in STORAGE_ERRNOS else e
