"""Datasets as in-memory tensors with a held-out validation split.

Small classification sets fit in memory, and batching tensors directly is several times faster on a
CPU than a DataLoader over PIL images. `TensorLoader` yields (x, y) batches like a DataLoader, so
every library function also accepts a user's own DataLoader. Training augmentation (random crop with
padding + horizontal flip for CIFAR, STL-10 and image folders) is a tensor transform applied to training
batches only. `imagefolder` reads any folder of images in torchvision's ImageFolder layout
(`pdiff.tasks.imagefolder`, which caches the decoded pixels, so only the first load pays for decoding).
`data.name` may also name a factory of your own, "package.module:factory" (`pdiff.tasks.imported`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DatasetError
from ..layout import resolve_data_dir
from .imagefolder import read_image_folder
from .imported import is_import_path, splits_of


@dataclass
class Split:
    x: torch.Tensor  # [n, *input_shape] float32
    y: torch.Tensor  # [n] int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class InputFormat:
    """What a model trained on a dataset expects of a new input: the class names in label order, and how raw
    inputs were normalised, x = (pixels / 255 - mean) / std per channel (mean, std: None where the data is used
    as it comes, as MNIST-1D's sequences)."""

    classes: list[str]
    mean: list[float] | None = None
    std: list[float] | None = None

    def to_dict(self) -> dict:
        return {"classes": self.classes, "normalisation": None if self.mean is None else
                {"pixels": "divided by 255, then per channel", "mean": self.mean, "std": self.std}}


@dataclass
class DataSplits:
    train: Split
    val: Split
    test: Split
    num_classes: int
    input_format: InputFormat | None = None  # None: a user's own data, described by nobody

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train.x.shape[1:])


Augment = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]


@dataclass(frozen=True)
class CropFlip:
    """Random crop after zero padding + random horizontal flip, per image of a batch [B, C, H, W]."""

    padding: int

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        n, c, h, w = x.shape
        p = self.padding
        padded = F.pad(x, (p, p, p, p))  # [B, C, H + 2p, W + 2p]; zero = the mean after normalisation
        top = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        left = torch.randint(0, 2 * p + 1, (n, 1), generator=generator)
        rows = top + torch.arange(h)  # [B, H]
        cols = left + torch.arange(w)  # [B, W]
        flip = torch.rand(n, 1, generator=generator) < 0.5
        cols = torch.where(flip, cols.flip(1), cols)
        return padded[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1),
                      rows.view(n, 1, h, 1), cols.view(n, 1, 1, w)]


class TensorLoader:
    """Iterate (x, y) batches of a Split; reshuffled each pass when `shuffle`, seeded by `generator`.

    `augment(x, generator)` transforms each batch (give it for training loaders only). Image batches
    [B, C, H, W] come channels-last: oneDNN's CPU convolutions run that layout faster; the values are the
    same.
    """

    def __init__(self, split: Split, batch_size: int, shuffle: bool = False,
                 generator: torch.Generator | None = None, augment: Augment | None = None):
        self.split, self.batch_size, self.shuffle, self.generator = split, batch_size, shuffle, generator
        self.augment = augment

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            x = self.split.x[idx]
            x = self.augment(x, self.generator) if self.augment else x
            yield (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x), self.split.y[idx]


def pairs(loader: Iterable) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The (x, y) batches of any loader, each checked to be a pair of tensors: a loader of dicts (a Hugging
    Face dataset's, say) would otherwise unpack its keys as x and y."""
    for batch in loader:
        if not (isinstance(batch, tuple | list) and len(batch) == 2 and all(isinstance(t, torch.Tensor)
                                                                           for t in batch)):
            kind = f"dicts with keys {sorted(batch)}" if isinstance(batch, dict) else type(batch).__name__
            raise DatasetError(f"the loader yields {kind}; pdiff trains on (x, y) pairs of tensors: wrap the "
                               "loader so that it yields (inputs, labels)")
        yield batch[0], batch[1]


def load_dataset(name: str, data_dir: str | Path | None = None, val_size: int | float = 1000, seed: int = 0,
                 num_samples: int = 10000, download: bool = True, image_size: int | None = None,
                 progress: bool = True) -> DataSplits:
    """Load a dataset by name and hold `val_size` training examples (or, given a float below 1, that fraction of
    them) out as the validation split.

    `image_size` and `progress` (a bar while decoding) concern `imagefolder` only; see `load_image_folder`.
    `name` may be an import path, "package.module:factory", of a function returning (train, test) datasets.
    """
    if name not in DATASETS and not is_import_path(name):
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}, or give a "
                           "factory of your own as package.module:factory")
    if is_import_path(name):
        (train_x, train_y), (test_x, test_y), num_classes = splits_of(name)
        train, test = Split(train_x, train_y), Split(test_x, test_y)
        fmt = InputFormat([str(label) for label in range(num_classes)])  # labels as they come, inputs as given
    elif name == "mnist1d":
        train, test, fmt = _mnist1d(num_samples, seed=42)
    elif name == "imagefolder":
        train, test, fmt = load_image_folder(resolve_data_dir(data_dir), image_size, progress)
    else:
        train, test, fmt = DATASETS[name](resolve_data_dir(data_dir), download)
    held_out = round(val_size * len(train)) if isinstance(val_size, float) else val_size
    if not 0 < held_out < len(train):
        raise DatasetError(f"data.val_size={val_size} holds out {held_out} of the {len(train)} examples in the "
                           f"{name} training set: give a count between 1 and {len(train) - 1}, or a fraction "
                           "such as 0.1")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:held_out], order[held_out:]
    return DataSplits(Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx]),
                      test, len(fmt.classes), fmt)


@functools.lru_cache(maxsize=2)
def _mnist1d(num_samples: int, seed: int) -> tuple[Split, Split, InputFormat]:
    """MNIST-1D generated locally (no download): [n, 1, 40] sequences, 80% train / 20% test.

    Generating takes seconds, so a process that runs several stages or tasks makes it once (read-only).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)

    def split(x, y) -> Split:
        return Split(torch.as_tensor(x, dtype=torch.float32).unsqueeze(1), torch.as_tensor(y, dtype=torch.int64))

    return split(data["x"], data["y"]), split(data["x_test"], data["y_test"]), InputFormat([str(d) for d in range(10)])


def _torchvision(cls_name: str, mean: tuple[float, ...], std: tuple[float, ...], folder: str
                 ) -> Callable[[Path, bool], tuple[Split, Split, InputFormat]]:
    """A loader for a torchvision dataset: read from `root`, download if missing and online.

    `folder` is where torchvision keeps the files under `root` (named in the error when they are missing).
    """

    def load(root: Path, download: bool) -> tuple[Split, Split, InputFormat]:
        import torchvision

        cls = getattr(torchvision.datasets, cls_name)
        splits = []
        for train in (True, False):
            which = {"split": "train" if train else "test"} if cls_name == "STL10" else {"train": train}
            try:
                ds = cls(root=str(root), download=False, **which)
            except RuntimeError as e:
                if any(p.is_file() for p in (root / folder).rglob("*")):  # files there that do not read
                    first = str(e).strip().splitlines()[0]
                    raise DatasetError(f"{cls_name} in {root / folder} is incomplete or corrupt ({first}): "
                                       "delete that folder and download it again, or copy good files there"
                                       ) from None
                missing = (f"{cls_name} is not in {root}: put it there in torchvision's layout "
                           f"({root}/{folder}), or pass --data-dir / set PDIFF_DATA")
                if not download:
                    raise DatasetError(f"{missing} (download is off: data.download=false)") from None
                try:
                    ds = cls(root=str(root), download=True, **which)
                except Exception as e:  # no network, a proxy, a full disk: all end the same way
                    raise DatasetError(f"{missing}; downloading failed ({type(e).__name__})") from None
            x = torch.as_tensor(ds.data).float().div(255)
            if x.ndim == 3:  # MNIST-like [n, H, W]
                x = x.unsqueeze(1)
            elif x.shape[-1] in (1, 3):  # CIFAR [n, H, W, C]; STL-10 is already [n, C, H, W]
                x = x.permute(0, 3, 1, 2)
            x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
            labels = ds.labels if cls_name == "STL10" else ds.targets
            splits.append(Split(x.contiguous(), torch.as_tensor(labels, dtype=torch.int64)))
        return splits[0], splits[1], InputFormat([str(c) for c in ds.classes], list(mean), list(std))

    return load


def _turned(load: Callable[[Path, bool], tuple[Split, Split, int]], quarter_turns: int
            ) -> Callable[[Path, bool], tuple[Split, Split, int]]:
    """A loader of `load`'s images turned by `quarter_turns` x 90 degrees, labels unchanged: the same digits as
    another task, which a model trained upright must adapt to (a LoRA adapter's job, `data.pretrain`)."""

    def load_turned(root: Path, download: bool) -> tuple[Split, Split, int]:
        train, test, num_classes = load(root, download)
        return (*(Split(s.x.rot90(quarter_turns, (2, 3)).contiguous(), s.y) for s in (train, test)), num_classes)

    return load_turned


def load_image_folder(root: Path, image_size: int | None = None, progress: bool = True
                      ) -> tuple[Split, Split, InputFormat]:
    """Read root/train/<class>/* and root/test/<class>/* (torchvision's ImageFolder layout) as RGB images.

    Returns the train and test splits, x [n, 3, H, W] float32 normalised per channel with the mean and std
    of train/ (the validation split is held out of it later, as for every dataset), and their InputFormat.
    With `image_size` every image is resized (shorter side) and centre-cropped to image_size x image_size;
    without it the images must all have one size. The pixels come from `pdiff.tasks.imagefolder`, which
    checks the folder and decodes it once until its contents change.
    """
    tensors, classes = read_image_folder(root, image_size, progress)
    mean, std = _channel_stats(tensors["train_x"])

    def normalised(x: torch.Tensor) -> torch.Tensor:  # uint8 [n, 3, H, W] -> float32, per-channel standardised
        return x.float().div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))

    return (Split(normalised(tensors["train_x"]), tensors["train_y"]),
            Split(normalised(tensors["test_x"]), tensors["test_y"]), InputFormat(classes, mean.tolist(), std.tolist()))


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std [C] (float32, pixel values in [0, 1]) of uint8 images x [n, C, H, W].

    Exact, from a 256-bin histogram per channel: faster than a float pass over the whole split.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    mean, std = [], []
    for channel in x.unbind(1):
        counts = torch.bincount(channel.flatten(), minlength=256).double()  # [256]
        m = (counts * values).sum() / counts.sum()
        mean.append(m)
        std.append(((counts * (values - m) ** 2).sum() / (counts.sum() - 1)).sqrt())
    return torch.stack(mean).float(), torch.stack(std).clamp_min(1e-6).float()  # a constant channel: 0, not NaN


def augmentation(name: str, input_shape: tuple[int, ...]) -> Augment | None:
    """The dataset's usual training augmentation: crop (padding 1/8 of the side) + flip for CIFAR, STL-10 and
    image folders (natural photos; set data.augment=false for images that must not be flipped, e.g. text)."""
    if name in AUGMENTED:
        return CropFlip(padding=input_shape[-1] // 8)
    return None


DATASETS: dict[str, Callable | None] = {
    "mnist1d": None,  # generated, see _mnist1d
    "mnist": _torchvision("MNIST", (0.1307,), (0.3081,), "MNIST/raw"),
    "mnist-rot90": _turned(_torchvision("MNIST", (0.1307,), (0.3081,), "MNIST/raw"), 1),  # digits on their side
    "fashion-mnist": _torchvision("FashionMNIST", (0.2860,), (0.3530,), "FashionMNIST/raw"),
    "cifar10": _torchvision("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py"),
    "cifar100": _torchvision("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-100-python"),
    "stl10": _torchvision("STL10", (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), "stl10_binary"),
    "imagefolder": None,  # data_dir/train/<class>/*, data_dir/test/<class>/*: see load_image_folder
}
AUGMENTED = ("cifar10", "cifar100", "stl10", "imagefolder")  # MNIST-like digits are not flipped
