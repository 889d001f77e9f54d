"""The errors a user can cause and fix: each message names the problem and the fix in one line.

The command line prints any `PdiffError` as that one line and exits with code 1; anything else is a bug
and keeps its traceback. This module imports nothing of pdiff, so every layer can raise these.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch


class PdiffError(Exception):
    """Base class of every error caused by input, files or settings rather than by a bug."""


class ConfigError(PdiffError, ValueError):
    """A config value or key is wrong; the message names the key and the fix."""


class SelectionError(PdiffError, ValueError):
    """A parameter selection matches nothing, or a checkpoint's spec does not fit the model."""


class DatasetError(PdiffError, RuntimeError):
    """A dataset is missing, corrupt or too small for the requested splits."""


class ArtifactError(PdiffError, RuntimeError):
    """An artifact on disk is missing, corrupt, or was made for something else."""


class TrainingError(PdiffError, RuntimeError):
    """Training diverged (a non-finite loss) or cannot start."""


class HealthError(PdiffError, RuntimeError):
    """The autoencoder cannot reproduce the checkpoints it was trained on."""


class StorageError(PdiffError, OSError):
    """A file cannot be written: the disk is full, or the folder is read-only or not ours."""


class NotFittedError(PdiffError, RuntimeError):
    """A generator was asked to sample, encode or save before it was fitted or loaded."""


class HubError(PdiffError, RuntimeError):
    """A Hugging Face hub repository cannot be found, downloaded or uploaded (offline, no token, no such repo)."""


def try_build(build: Callable[[], Any], key: str, kwargs: dict[str, Any], device: str | None = "meta") -> Any:
    """`build()` on `device` (None: the default), with a constructor's own error (a bad size in `kwargs`, say)
    as a ConfigError naming `key`. On "meta" it is a dry run that allocates nothing.

    Without kwargs there is nothing of the user's to check, and an error is pdiff's own bug (a traceback).
    """
    if not kwargs:
        return build() if device is None else None
    try:
        with torch.device(device) if device else contextlib.nullcontext():
            return build()
    except NotImplementedError:  # an op the meta device lacks: nothing learnt, the real build will tell
        return None
    except (TypeError, ValueError, RuntimeError, ZeroDivisionError, IndexError) as e:
        raise ConfigError(f"{key}={kwargs} cannot build the network ({str(e).strip().splitlines()[0]}): "
                          f"fix {key}") from None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, for a one-line error; its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
