"""Where a result came from: the pdiff version and commit, the torch version, the thread count and the device.

Results move with the thread count (float sums are reduced in another order), so every results.json and bench
JSON records it; see docs/statistics.md.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import torch


def provenance(device: torch.device | str = "cpu") -> dict:
    """{"pdiff", "commit", "dirty", "torch", "threads", "device"}; commit and dirty are None outside a git checkout."""
    commit, dirty = _git_state(Path(__file__).resolve().parent)
    return {"pdiff": version(), "commit": commit, "dirty": dirty, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "device": str(device)}


def version() -> str:
    """The installed pdiff version ("unknown" in a source tree that was never installed)."""
    try:
        return metadata.version("pdiff")
    except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "unknown"


def _git_state(directory: Path) -> tuple[str | None, bool | None]:
    """HEAD's commit and whether tracked files differ from it, for the checkout holding `directory`."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        changes = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=directory,
                                 capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # no git, or not a checkout (an installed wheel)
        return None, None
    return commit, bool(changes.strip())
