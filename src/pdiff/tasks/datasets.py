"""Datasets as in-memory tensors with a held-out validation split.

Small classification sets fit in memory, and batching tensors directly is several times faster on a
CPU than a DataLoader over PIL images. `TensorLoader` yields (x, y) batches like a DataLoader, so
every library function also accepts a user's own DataLoader. Training augmentation (random crop with
padding + horizontal flip for CIFAR and STL-10) is a tensor transform applied to training batches only.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DatasetError

DEFAULT_DATA_DIR = Path("~/.cache/pdiff/data")


@dataclass
class Split:
    x: torch.Tensor  # [n, *input_shape] float32
    y: torch.Tensor  # [n] int64

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class DataSplits:
    train: Split
    val: Split
    test: Split
    num_classes: int

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

    `augment(x, generator)` transforms each batch (give it for training loaders only).
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
            yield (self.augment(x, self.generator) if self.augment else x), self.split.y[idx]


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """`data_dir`, else $PDIFF_DATA, else ~/.cache/pdiff/data."""
    chosen = data_dir or os.environ.get("PDIFF_DATA") or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


def load_dataset(name: str, data_dir: str | Path | None = None, val_size: int = 1000, seed: int = 0,
                 num_samples: int = 10000, download: bool = True) -> DataSplits:
    """Load a dataset by name and hold `val_size` training examples out as the validation split."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}")
    if name == "mnist1d":
        train, test, num_classes = _mnist1d(num_samples, seed=42)
    else:
        train, test, num_classes = DATASETS[name](resolve_data_dir(data_dir), download)
    if not 0 < val_size < len(train):
        raise DatasetError(f"data.val_size={val_size} must be between 1 and {len(train) - 1} "
                           f"(the {name} training set has {len(train)} examples)")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    return DataSplits(Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx]),
                      test, num_classes)


@functools.lru_cache(maxsize=2)
def _mnist1d(num_samples: int, seed: int) -> tuple[Split, Split, int]:
    """MNIST-1D generated locally (no download): [n, 1, 40] sequences, 80% train / 20% test.

    Generating takes seconds, so a process that runs several stages or tasks makes it once (read-only).
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = num_samples, seed
    data = make_dataset(args)

    def split(x, y) -> Split:
        return Split(torch.as_tensor(x, dtype=torch.float32).unsqueeze(1), torch.as_tensor(y, dtype=torch.int64))

    return split(data["x"], data["y"]), split(data["x_test"], data["y_test"]), 10


def _torchvision(cls_name: str, mean: tuple[float, ...], std: tuple[float, ...], folder: str
                 ) -> Callable[[Path, bool], tuple[Split, Split, int]]:
    """A loader for a torchvision dataset: read from `root`, download if missing and online.

    `folder` is where torchvision keeps the files under `root` (named in the error when they are missing).
    """

    def load(root: Path, download: bool) -> tuple[Split, Split, int]:
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
        return splits[0], splits[1], len(ds.classes)

    return load


def augmentation(name: str, input_shape: tuple[int, ...]) -> Augment | None:
    """The dataset's usual training augmentation: crop (padding 1/8 of the side) + flip for CIFAR and STL-10."""
    if name in AUGMENTED:
        return CropFlip(padding=input_shape[-1] // 8)
    return None


DATASETS: dict[str, Callable | None] = {
    "mnist1d": None,  # generated, see _mnist1d
    "mnist": _torchvision("MNIST", (0.1307,), (0.3081,), "MNIST/raw"),
    "fashion-mnist": _torchvision("FashionMNIST", (0.2860,), (0.3530,), "FashionMNIST/raw"),
    "cifar10": _torchvision("CIFAR10", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), "cifar-10-batches-py"),
    "cifar100": _torchvision("CIFAR100", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), "cifar-100-python"),
    "stl10": _torchvision("STL10", (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), "stl10_binary"),
}
AUGMENTED = ("cifar10", "cifar100", "stl10")  # MNIST-like digits are not flipped
