"""A task = a dataset + a model factory + the recipe in its config. `Task` is what every stage of a run shares."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch
from torch import nn

from . import distributed
from .adapters import add_adapters
from .config import Config
from .errors import ConfigError, try_build
from .tasks.datasets import DataSplits, Split, TensorLoader, load_dataset
from .tasks.imagefolder import image_folder_identity
from .tasks.imported import is_import_path
from .tasks.models import build_model, input_problem


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
        d, m = self.config.data, self.config.model
        data = load_dataset(d.name, d.data_dir, d.val_size, self.config.seed, d.num_samples, d.download,
                            d.image_size, self.progress)
        if d.name == "imagefolder" and d.image_size is None:  # a given image_size was checked with the config
            problem = input_problem(m.name, m.kwargs, data.input_shape)
            if problem:
                size = "x".join(map(str, data.input_shape[1:]))
                raise ConfigError(f"the images are {size}, too small for model.name={m.name} ({problem}): set "
                                  "data.image_size=N to resize them to a size the model takes")
        return data

    @cached_property
    def pretrain(self) -> Split:
        """The examples base training learns first: data.pretrain's training split (its validation examples held
        out as for `data`), or the task's own training split."""
        d = self.config.data
        if d.pretrain is None:
            return self.data.train
        data = load_dataset(d.pretrain, d.data_dir, d.val_size, self.config.seed, d.num_samples, d.download,
                            d.image_size, self.progress)
        if (data.input_shape, data.num_classes) != (self.data.input_shape, self.data.num_classes):
            raise ConfigError(f"data.pretrain={d.pretrain} has inputs {list(data.input_shape)} in "
                              f"{data.num_classes} classes, data.name={d.name} {list(self.data.input_shape)} in "
                              f"{self.data.num_classes}: pretrain on a dataset of the same shape and classes")
        return data.train

    @cached_property
    def data_identity(self) -> str | None:
        """The contents of a user's image folder (`image_folder_identity`), recorded with every stage made from
        it; None for the named datasets, fixed files that torchvision checks."""
        d = self.config.data
        return image_folder_identity(d.data_dir) if d.name == "imagefolder" else None

    def made_from_this_data(self, recorded: str | None) -> bool:
        """Whether a stage that recorded the data identity `recorded` was made from the data as it is now. A stage
        recorded before image folder identities left out modification times matches while its files are
        untouched (the identity it recorded is then the one with_mtimes gives)."""
        if recorded == self.data_identity:
            return True
        d = self.config.data
        return d.name == "imagefolder" and recorded == image_folder_identity(d.data_dir, with_mtimes=True)

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
        """A freshly initialised model; an error of its constructor is a ConfigError naming model.kwargs (or, for
        a factory of your own, naming it)."""
        m = self.config.model
        shape, classes = self.data.input_shape, self.data.num_classes
        if is_import_path(m.name):  # its errors are one line already
            return build_model(m.name, shape, classes, **m.kwargs)
        return try_build(lambda: build_model(m.name, shape, classes, **m.kwargs), "model.kwargs", m.kwargs,
                         device=None)

    def adapt(self, model: nn.Module) -> nn.Module:
        """The model the run's subset lives in: `model` itself, or with model.peft a copy of it wrapped with those
        LoRA adapters (initialised from the run's seed, `pdiff.adapters.add_adapters`)."""
        peft = self.config.model.peft
        return model if peft is None else add_adapters(model, peft, self.config.seed)
