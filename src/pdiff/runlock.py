"""One pdiff process per run folder or output folder: a lock file, created atomically, that holds the owner's pid.

Two processes writing the same stage folders (or the same `pdiff sample --out`, the same export folder) would mix
their files, so the second one stops with a clear error. A lock left by a process that died (kill -9, a power cut)
names a pid that no longer runs and is taken over. This module knows nothing of the launcher: under a
multi-process launch the caller says which process is the main one (`is_main`), and only that one locks.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import ArtifactError, StorageError

LOCK_FILE = ".lock"


def alone() -> bool:
    """The is-main predicate of a process that runs alone: it is the main one."""
    return True


@contextmanager
def run_lock(root: str | Path, is_main: Callable[[], bool] = alone) -> Iterator[Path]:
    """Hold `root`/.lock for the duration of the block; creates `root` if needed.

    Under a multi-process launch the main process (`is_main()`) holds it for all of them. A process that holds
    the lock already (a nested call) holds it on, and releases it when the outer block ends.
    """
    root = Path(root)
    if not is_main():
        yield root / LOCK_FILE
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _cannot_write(f"the run folder {root}", e, "--runs-dir") from None
    with file_lock(root / LOCK_FILE, f"the run folder {root}", "--runs-dir") as path:
        yield path


@contextmanager
def file_lock(path: Path, what: str, option: str) -> Iterator[Path]:
    """Hold the lock file `path` (its folder must exist) for the block; `what` names the locked thing and
    `option` the command-line option that picks another one, in the one-line errors."""
    if _owner(path) == os.getpid():
        yield path
        return
    try:
        while not _create(path):
            owner = _owner(path)
            if owner is not None and _alive(owner):
                raise ArtifactError(f"{what} is in use by another pdiff process (pid {owner}): wait for it to "
                                    f"finish, or delete {path} if that process is not pdiff")
            path.unlink(missing_ok=True)  # a stale lock: its process is gone
    except OSError as e:
        raise _cannot_write(what, e, option) from None
    try:
        yield path
    finally:
        if _owner(path) == os.getpid():
            path.unlink(missing_ok=True)


def _cannot_write(what: str, e: OSError, option: str) -> StorageError | ArtifactError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageError(f"cannot write to {what}: no space left on the device (the lock needs a few bytes): "
                            f"free some space or pass another {option}")
    return ArtifactError(f"cannot write to {what} ({e.strerror or e}): fix its permissions or pass another {option}")


def _create(path: Path) -> bool:
    """Create the lock holding our pid; False if it already exists.

    The pid is written to a private file first and hard-linked into place (which fails, like O_EXCL, if
    the lock exists), so no other process ever sees an empty lock.
    """
    mine = path.with_name(f"{path.name}.{os.getpid()}")
    try:
        mine.write_text(f"{os.getpid()}\n")  # a full disk fails here: the finally removes the empty file
        os.link(mine, path)
    except FileExistsError:
        return False
    finally:
        mine.unlink(missing_ok=True)
    return True


def _owner(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):  # gone, or not a pid
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
