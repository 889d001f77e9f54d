"""One pdiff process per run folder: a lock file, created atomically, that holds the owner's pid.

Two processes writing the same stage folders would mix their artifacts, so the second one stops with a
clear error. A lock left by a process that died (kill -9, a power cut) names a pid that no longer runs
and is taken over.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import distributed
from .errors import ArtifactError, StorageError

LOCK_FILE = ".lock"


@contextmanager
def run_lock(root: str | Path) -> Iterator[Path]:
    """Hold `root`/.lock for the duration of the block; creates `root` if needed.

    Under a multi-process launch the main process holds it for all of them. A process that holds the lock
    already (a nested call) holds it on, and releases it when the outer block ends.
    """
    root = Path(root)
    path = root / LOCK_FILE
    if not distributed.is_main_process() or _owner(path) == os.getpid():
        yield path
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        while not _create(path):
            owner = _owner(path)
            if owner is not None and _alive(owner):
                raise ArtifactError(f"{root} is in use by another pdiff process (pid {owner}): wait for it to "
                                    f"finish, or delete {path} if that process is not pdiff")
            path.unlink(missing_ok=True)  # a stale lock: its process is gone
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageError(f"cannot write to the run folder {root}: no space left on the device (the lock "
                               "needs a few bytes): free some space or pass another --runs-dir") from None
        raise ArtifactError(f"cannot write to the run folder {root} ({e.strerror or e}): fix its permissions "
                            "or pass another --runs-dir") from None
    try:
        yield path
    finally:
        if _owner(path) == os.getpid():
            path.unlink(missing_ok=True)


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
