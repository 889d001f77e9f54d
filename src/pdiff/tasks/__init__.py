"""A task = a dataset + a model factory + the recipe in its config. `Task` is what every stage of a run shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import distributed
from ..errors import try_build
from .datasets import DataSplits, TensorLoader, load_dataset
from .models import build_model

if TYPE_CHECKING:  # pdiff.config validates against this package's registries, so it imports this package
    from ..config import Config


@dataclass
class Task:
    """One config with the things its stages need: the device, the data splits (loaded once) and fresh models."""

    config: Config
    progress: bool = True
    device: torch.device = field(init=False)  # this process's device (its own GPU under a multi-process launch)

    def __post_init__(self) -> None:
        self.device = distributed.setup(distributed.resolve_device(self.config.device), self.config.precision)

    @cached_property
    def data(self) -> DataSplits:
        d = self.config.data
        return load_dataset(d.name, d.data_dir, d.val_size, self.config.seed, d.num_samples, d.download,
                            d.image_size, self.progress)

    def loader(self, split: str) -> TensorLoader:
        """The 'train', 'val' or 'test' split in evaluation batches, in a fixed order."""
        return TensorLoader(getattr(self.data, split), self.config.data.eval_batch_size)

    def bar(self, label: str) -> str | None:
        """A progress bar's label where this run shows progress, else None (what `predict_many`'s desc takes)."""
        return label if self.progress else None

    def labels(self, split: str) -> torch.Tensor:
        """The labels [n] of a split, in the loader's order."""
        return getattr(self.data, split).y

    def new_model(self) -> nn.Module:
        """A freshly initialised model; an error of its constructor is a ConfigError naming model.kwargs."""
        m = self.config.model
        shape, classes = self.data.input_shape, self.data.num_classes
        return try_build(lambda: build_model(m.name, shape, classes, **m.kwargs), "model.kwargs", m.kwargs,
                         device=None)
