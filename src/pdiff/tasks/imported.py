"""Models and datasets of your own, named by import path: `model.name` or `data.name` = "package.module:factory".

The module is imported from the current folder, the folder of the YAML file that names it (`importable`) or
anything on `sys.path`; `factory` is a function or class in it. A model factory gets `input_shape` and
`num_classes` where its signature names them, plus `model.kwargs`; a data factory takes no argument and returns
`(train, test)`, each a dataset of `(x, y)` pairs (`splits_of` reads them into tensors). The named module's
source is part of the run's identity (`source_digest`), so a changed file reruns what was made from it.
Every mistake a user can make here is a one-line ConfigError or DatasetError.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, DatasetError, first_line

SEPARATOR = ":"


def is_import_path(name: str) -> bool:
    """Whether a model or dataset name is an import path ("package.module:factory") rather than a registry name."""
    return SEPARATOR in name


def importable(folder: str | Path) -> None:
    """Make modules in `folder` importable (a YAML file's folder: the factories it names may sit beside it)."""
    path = str(Path(folder).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


def resolve(name: str, key: str) -> Callable:
    """The function or class `name` ("package.module:factory") names; `key` (model.name, data.name) is the config
    key the one-line errors name."""
    module_name, factory_name = _parts(name, key)
    importable(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and f"{module_name}.".startswith(f"{e.name}."):  # the named module (or its package)
            raise ConfigError(f"{key}={name!r}: no module {module_name!r} in the current folder, the YAML file's "
                              "folder or sys.path: put it there, or fix the module part") from None
        raise ConfigError(f"{key}={name!r}: importing {module_name} failed ({first_line(e)}): install or fix "
                          "what it imports") from None
    except Exception as e:  # a syntax error, or an error the module raises as it runs
        raise ConfigError(f"{key}={name!r}: importing {module_name} failed ({type(e).__name__}: {first_line(e)}): "
                          "fix that module") from None
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        found = "is not callable" if factory is not None else "does not exist"
        raise ConfigError(f"{key}={name!r}: {module_name}.{factory_name} {found}: name a function or class of "
                          f"{module_name} after the colon")
    return factory


def source_digest(name: str, key: str) -> str:
    """`name` with the digest of its module's source ("pkg.mod:f@sha256:1a2b..."): what a config hash holds for
    it, so that a changed module reruns what depends on it. Found without running the module."""
    module_name, _ = _parts(name, key)
    importable(os.getcwd())
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None or not Path(spec.origin).is_file():
        resolve(name, key)  # raises the one-line error that says why
        raise ConfigError(f"{key}={name!r}: {module_name} has no source file to identify the run by: give a "
                          "module that is a .py file")
    return f"{name}@sha256:{hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()[:16]}"


def build_imported_model(name: str, input_shape: tuple[int, ...], num_classes: int, **kwargs: Any) -> nn.Module:
    """The model the factory `name` builds for inputs of `input_shape` and `num_classes` classes (each passed where
    the factory's signature names it), with `kwargs` (model.kwargs); its errors become one line."""
    factory = resolve(name, "model.name")
    given = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: give it what model.kwargs holds
        parameters = {}
    arguments = {k: v for k, v in given.items() if k in parameters}
    try:
        model = factory(**arguments, **kwargs)
    except Exception as e:  # the user's code: any error it raises is theirs to fix
        raise ConfigError(f"model.name={name!r}: {name}({_call(arguments, kwargs)}) raised {type(e).__name__}: "
                          f"{first_line(e)}: fix the factory or model.kwargs") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name={name!r} returned a {type(model).__name__}, not a torch nn.Module: return "
                          "the network")
    return model


def splits_of(name: str) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], int]:
    """(train x, y), (test x, y) and the class count from the data factory `name`: x [n, *input_shape] float32,
    y [n] int64 in 0..C - 1, C = the largest label + 1."""
    factory = resolve(name, "data.name")
    try:
        made = factory()
    except Exception as e:  # the user's code
        raise DatasetError(f"data.name={name!r}: {name}() raised {type(e).__name__}: {first_line(e)}: fix the "
                           "factory") from None
    if not (isinstance(made, tuple | list) and len(made) == 2):
        raise DatasetError(f"data.name={name!r} returned a {type(made).__name__}; return two datasets, (train, "
                           "test), each of (x, y) pairs")
    (train_x, train_y), (test_x, test_y) = (_tensors(made[0], "train", name), _tensors(made[1], "test", name))
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(f"data.name={name!r}: train inputs are {tuple(train_x.shape[1:])}, test inputs "
                           f"{tuple(test_x.shape[1:])}: give both splits inputs of one shape")
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    return (train_x, train_y), (test_x, test_y), num_classes


def _tensors(dataset: Any, split: str, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """x [n, ...] float32 and y [n] int64 of a dataset of (x, y) pairs; a TensorDataset or a pair of tensors
(inputs [n, ...], labels [n]) is read without a loop."""
    where = f"data.name={name!r}: the {split} dataset"
    tensors = getattr(dataset, "tensors", dataset)  # a TensorDataset's, or the (inputs, labels) pair itself
    if isinstance(tensors, tuple | list) and len(tensors) == 2 and all(isinstance(t, torch.Tensor) for t in tensors):
        xs, ys = tensors
    else:
        if not isinstance(dataset, Iterable) and not hasattr(dataset, "__getitem__"):
            raise DatasetError(f"{where} is a {type(dataset).__name__}: return a dataset (or list) of (x, y) pairs")
        items = [dataset[i] for i in range(len(dataset))] if hasattr(dataset, "__len__") and hasattr(
            dataset, "__getitem__") else list(dataset)
        for i, item in enumerate(items):
            if not (isinstance(item, tuple | list) and len(item) == 2):
                kind = (f"a dict with keys {sorted(item)}" if isinstance(item, dict)
                        else f"of type {type(item).__name__}")
                raise DatasetError(f"{where}'s item {i} is {kind}: each item must be an (x, y) pair (inputs, class "
                                   "index)")
        if not items:
            raise DatasetError(f"{where} is empty: give it examples")
        try:
            xs = torch.stack([torch.as_tensor(x) for x, _ in items])
            ys = torch.as_tensor([int(y) for _, y in items])
        except (TypeError, ValueError, RuntimeError) as e:
            raise DatasetError(f"{where} does not stack into tensors ({first_line(e)}): give every x one shape "
                               "and every y a class index (an int)") from None
    if len(xs) == 0 or len(xs) != len(ys):
        raise DatasetError(f"{where} has {len(xs)} inputs and {len(ys)} labels: give one label per input")
    if ys.dtype.is_floating_point or ys.dim() != 1 or ys.min() < 0:
        raise DatasetError(f"{where} has labels of shape {tuple(ys.shape)} and dtype {ys.dtype}: give each y a class "
                           "index 0..C-1 (an int)")
    return xs.float().contiguous(), ys.long()


def _parts(name: str, key: str) -> tuple[str, str]:
    module_name, _, factory_name = name.partition(SEPARATOR)
    if not module_name or not factory_name.isidentifier() or not all(p.isidentifier() for p in module_name.split(".")):
        raise ConfigError(f"{key}={name!r} is not an import path: write package.module:factory, e.g. mynets:SmallNet")
    return module_name, factory_name


def _call(arguments: dict, kwargs: dict) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in {**arguments, **kwargs}.items())
