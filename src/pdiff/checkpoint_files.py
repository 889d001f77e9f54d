"""Checkpoints that other code saved: state_dict files and folders, read by what a path is.

`READERS` holds one entry per kind of path (a `CheckpointReader`): a `.safetensors` file, a `.pt` / `.pth` file
(read with `torch.load(weights_only=True)`: tensors and plain containers only, never unpickled otherwise), a
folder holding a `model.safetensors` and a PEFT adapter folder (`pdiff.adapters`). The first entry that accepts a
path reads it, so a new kind of checkpoint is one more entry. `find` expands a glob into paths in natural order
(ckpt_2 before ckpt_10); `identity` is the SHA-256 of the files a reader reads, which the config hash takes so
that a changed file reruns what depends on it; `read_checkpoints` cuts a parameter subset out of each checkpoint,
checked against the model, and `checkpoints_from` (`pdiff.checkpoints_from` in the library) makes a
CheckpointSet of them.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from pickle import UnpicklingError  # what torch.load(weights_only=True) raises for what it will not build
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from .adapters import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, read_adapter
from .checkpoints import CheckpointSet
from .errors import ArtifactError, ConfigError, SelectionError, first_line
from .params import ParamSpec

log = logging.getLogger(__name__)
StateDict = dict[str, torch.Tensor]
MODEL_FILE = "model.safetensors"  # what a model folder (Hugging Face's save_pretrained layout) holds


class CheckpointReader(Protocol):
    """One kind of checkpoint path. `kind`: how messages name it; `accepts(path)`: whether `path` is of this kind
    (by its name and, for a folder, the files in it); `files(path)`: the files `read` reads, whose digests identify
    the checkpoint; `read(path, state_dict_key)`: its tensors by the model's names (`state_dict_key`: the entry of
    a file that holds a dict around the state_dict, for the kinds that have such files)."""

    kind: str

    def accepts(self, path: Path) -> bool: ...

    def files(self, path: Path) -> list[Path]: ...

    def read(self, path: Path, state_dict_key: str | None) -> StateDict: ...


class SafetensorsFile:
    kind = ".safetensors state_dict files"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and path.suffix == ".safetensors"

    def files(self, path: Path) -> list[Path]:
        return [path]

    def read(self, path: Path, state_dict_key: str | None) -> StateDict:
        return read_safetensors(path)


class TorchFile:
    kind = ".pt / .pth state_dict files"

    def accepts(self, path: Path) -> bool:
        return path.is_file() and path.suffix in (".pt", ".pth")

    def files(self, path: Path) -> list[Path]:
        return [path]

    def read(self, path: Path, state_dict_key: str | None) -> StateDict:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except UnpicklingError as e:
            refused = re.search(r"GLOBAL (\S+)", str(e))  # an object weights_only will not build; else no pickle
            if refused is None:
                raise ArtifactError(f"{path} is not a readable torch file (not a torch.save archive): save "
                                    "model.state_dict() again, with torch.save or as safetensors") from None
            raise ArtifactError(f"{path} holds a Python object ({refused[1]}) besides tensors, which pdiff does not "
                                "unpickle (torch.load weights_only=True refused it): save the state_dict alone, "
                                "model.state_dict() with torch.save or as safetensors") from None
        except (RuntimeError, OSError, EOFError, ValueError) as e:
            raise ArtifactError(f"{path} is not a readable torch file ({first_line(e)}): save model.state_dict() "
                                "again, with torch.save or as safetensors") from None
        if state_dict_key is not None:
            if not isinstance(data, Mapping) or state_dict_key not in data:
                keys = ", ".join(map(str, data)) if isinstance(data, Mapping) else type(data).__name__
                raise ArtifactError(f"{path} has no entry collect.state_dict_key={state_dict_key!r} (it holds "
                                    f"{keys}): set collect.state_dict_key to the entry that holds the state_dict, "
                                    "or null for a file that is the state_dict")
            data = data[state_dict_key]
        return as_state_dict(data, path)


class ModelFolder:
    kind = f"folders holding a {MODEL_FILE}"

    def accepts(self, path: Path) -> bool:
        return path.is_dir() and (path / MODEL_FILE).is_file()

    def files(self, path: Path) -> list[Path]:
        return [path / MODEL_FILE]

    def read(self, path: Path, state_dict_key: str | None) -> StateDict:
        return read_safetensors(path / MODEL_FILE)


class AdapterFolder:
    kind = f"PEFT adapter folders ({ADAPTER_CONFIG_FILE} + {ADAPTER_WEIGHTS_FILE})"

    def accepts(self, path: Path) -> bool:
        return is_adapter_folder(path)

    def files(self, path: Path) -> list[Path]:
        return [path / ADAPTER_CONFIG_FILE, path / ADAPTER_WEIGHTS_FILE]

    def read(self, path: Path, state_dict_key: str | None) -> StateDict:
        return read_adapter(path)[1]  # under the names of the model wrapped with model.peft


def is_adapter_folder(path: Path) -> bool:
    """Whether `path` is a folder in PEFT's adapter layout (what PeftModel.save_pretrained writes)."""
    return path.is_dir() and (path / ADAPTER_CONFIG_FILE).is_file() and (path / ADAPTER_WEIGHTS_FILE).is_file()


READERS: dict[str, CheckpointReader] = {"safetensors": SafetensorsFile(), "torch": TorchFile(),
                                        "model_folder": ModelFolder(), "adapter_folder": AdapterFolder()}


def kinds() -> str:
    """Every kind of checkpoint the readers take, for messages: "a, b or c"."""
    names = [reader.kind for reader in READERS.values()]
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def reader_for(path: Path, key: str) -> CheckpointReader:
    """The first reader that accepts `path` (found through the config key `key`), else one line naming it."""
    for reader in READERS.values():
        if reader.accepts(path):
            return reader
    raise ConfigError(f"{key} matches {path}, which is no checkpoint pdiff reads: give {kinds()} (narrow the glob "
                      "to them)")


def find(pattern: str, key: str) -> list[Path]:
    """The checkpoints the glob `pattern` (of config key `key`; `~` and `**` allowed, relative to the current
    folder) matches, in natural order: digit runs compare as numbers, so ckpt_2 comes before ckpt_10."""
    paths = sorted((Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True)), key=natural_order)
    if not paths:
        raise ConfigError(f"{key}={pattern!r} matches no file or folder (relative paths start at "
                          f"{Path.cwd()}): give a glob of {kinds()}")
    for path in paths:
        reader_for(path, key)
    return paths


def find_one(path: str, key: str) -> Path:
    """The checkpoint file or folder `path` (of config key `key`; `~` allowed), refused with one line when it is
    missing or of no kind pdiff reads."""
    found = Path(os.path.expanduser(path))
    if not found.exists():
        raise ConfigError(f"{key}={path!r} does not exist (relative paths start at {Path.cwd()}): give one of "
                          f"the {kinds()}")
    reader_for(found, key)
    return found


def absolute(pattern: str | None) -> str | None:
    """`pattern` (a path or glob) made absolute, `~` expanded: what a run's config.yaml records, so that it reads
    the same files from any folder (None stays None)."""
    return None if pattern is None else os.path.abspath(os.path.expanduser(pattern))


def natural_order(path: Path) -> list[str | int]:
    """A sort key that reads digit runs as numbers: ckpt_2 < ckpt_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def identity(pattern: str, key: str) -> list[str]:
    """The SHA-256 of every checkpoint `pattern` matches, in order: what the config hash records for `key`."""
    return [digest(path, key) for path in find(pattern, key)]


_digests: dict[tuple[str, int, int], str] = {}  # (file, size, mtime in ns) -> sha256: hashed once per version


def digest(path: Path, key: str) -> str:
    """SHA-256 of the files the reader of `path` reads (read once per file version: configs are hashed often)."""
    sha = hashlib.sha256()
    for file in reader_for(path, key).files(path):
        stat = file.stat()
        version = (str(file.resolve()), stat.st_size, stat.st_mtime_ns)
        if version not in _digests:
            file_sha = hashlib.sha256()
            with open(file, "rb") as f:
                while chunk := f.read(1 << 20):
                    file_sha.update(chunk)
            _digests[version] = file_sha.hexdigest()
        sha.update(_digests[version].encode())
    return sha.hexdigest()


def read_state_dict(path: Path, key: str, state_dict_key: str | None = None) -> StateDict:
    """The tensors of the checkpoint at `path` (found through config key `key`), as saved (dtypes kept)."""
    return reader_for(path, key).read(path, state_dict_key)


def read_safetensors(path: Path) -> StateDict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as e:
        raise ArtifactError(f"{path} is not a readable safetensors file ({first_line(e)}): save it again with "
                            "safetensors.torch.save_file(model.state_dict(), path)") from None


def as_state_dict(data: object, path: Path) -> StateDict:
    """`data` if it is a state_dict (names -> tensors), else one line saying what it is and how to read it."""
    if isinstance(data, Mapping) and data and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in data.items()):
        return dict(data)
    if isinstance(data, Mapping):
        inner = [k for k, v in data.items() if isinstance(v, Mapping) and v
                 and all(isinstance(t, torch.Tensor) for t in v.values())]
        hint = (f"set collect.state_dict_key={inner[0]}" if inner else
                "set collect.state_dict_key to the entry that holds it")
        raise ArtifactError(f"{path} holds a dict around the state_dict (entries: "
                            f"{', '.join(map(str, list(data)[:6]))}): {hint}")
    raise ArtifactError(f"{path} holds a {type(data).__name__}, not a state_dict: save model.state_dict()")


def check_against(tensors: StateDict, model: StateDict, path: Path, needed: tuple[str, ...] | None = None) -> None:
    """Refuse, with one line naming the first mismatch, a checkpoint whose tensors the model has not (a name, a
    shape or a dtype), or that lacks one of `needed` (default: every tensor of the model's state_dict)."""
    for name, tensor in tensors.items():
        if name not in model:
            raise SelectionError(f"{path} holds {name!r}, which the model has not (its names look like "
                                 f"{', '.join(list(model)[:3])}): the checkpoint is of another model, or its names "
                                 "carry a prefix (e.g. 'module.'); save the model's own state_dict")
        want = model[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise SelectionError(f"{path}: {name!r} is {tuple(tensor.shape)} but the model's is "
                                 f"{tuple(want.shape)}: the checkpoint is of another model or of other model.kwargs")
        if tensor.dtype != want.dtype:
            raise SelectionError(f"{path}: {name!r} is {tensor.dtype} but the model's is {want.dtype}: save the "
                                 f"checkpoint in {want.dtype} (e.g. model.float().state_dict())")
    for name in model if needed is None else needed:
        if name not in tensors:
            whole = " a whole state_dict" if needed is None else " the parameters of collect.subset"
            raise SelectionError(f"{path} lacks {name!r} of the model: give{whole} (model.state_dict())")


def read_checkpoints(paths: list[Path], key: str, spec: ParamSpec, base: StateDict,
                     state_dict_key: str | None = None) -> torch.Tensor:
    """The subset `spec` cut from each checkpoint at `paths` -> params [K, D] (float32), each checked against
    the model's state_dict `base` (the base model's values).

    A checkpoint may hold more than the subset; where those other tensors differ from `base` a warning names
    them, since every checkpoint is evaluated with the base model's values outside the subset.
    """
    params, differing = [], {}
    for path in paths:
        tensors = read_state_dict(path, key, state_dict_key)
        check_against(tensors, base, path, spec.names)
        params.append(spec.flatten(tensors))
        if not torch.isfinite(params[-1]).all():
            raise ArtifactError(f"{path} holds NaN or Inf in the parameters of collect.subset: leave out the "
                                "checkpoints of a training that diverged")
        for name, tensor in tensors.items():
            if name not in spec.names and name not in differing and not torch.equal(tensor, base[name]):
                differing[name] = path
    if differing:
        names = list(differing)
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        log.warning("%s: the checkpoints differ from the base model outside collect.subset, in %s (first in %s): "
                    "each is evaluated with the base model's values there; add them to collect.subset, or give "
                    "collect.base", key, shown, differing[names[0]])
    return torch.stack(params)


def checkpoints_from(pattern: str, model: nn.Module, spec: ParamSpec, state_dict_key: str | None = None,
                     key: str = "collect.from") -> CheckpointSet:
    """The checkpoints the glob `pattern` matches, in natural order, as a CheckpointSet of `spec`'s subset (params
    [K, D]), each checked against `model`, whose own values are the base outside the subset (`read_checkpoints`).
    `key`: the config key that gave the glob, for the messages."""
    base = {name: t.detach().cpu() for name, t in model.state_dict().items()}
    return CheckpointSet(read_checkpoints(find(pattern, key), key, spec, base, state_dict_key), spec)
