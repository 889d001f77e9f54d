"""Your own images: a folder in torchvision's ImageFolder layout, checked, identified by its contents and decoded
once into a uint8 cache.

root/train/<class>/* and root/test/<class>/*; the class folders must match, and links may not leave their
class folder, loop or dangle (torchvision follows them). What a run made from the folder depends on, the class
names in their order and every image's path, size and bytes, is `image_folder_identity`; the cache is keyed by
the same digest, so a stale cache is never used. A copy of the folder (new modification times, the same bytes)
is the same data, as a touched checkpoint file is the same checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from ..distributed import progress_bar
from ..errors import ArtifactError, DatasetError
from ..layout import resolve_data_dir
from ..store import load_tensors, save_tensors

if TYPE_CHECKING:
    from torchvision.datasets import ImageFolder

log = logging.getLogger(__name__)

CACHE_FOLDER = ".pdiff-cache"  # inside an image folder's root, beside train/ and test/
USER_CACHE_DIR = Path("~/.cache/pdiff/imagefolder")  # where the cache goes when the data folder is read-only
CACHE_VERSION = 1  # part of the cache key: raise it when the cached tensors change meaning


def read_image_folder(root: Path, image_size: int | None = None, progress: bool = True
                      ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The pixels of root/train/<class>/* and root/test/<class>/* as uint8 [n, 3, H, W] ("train_x", "test_x")
    with their labels [n] ("train_y", "test_y"), and the class names in label order.

    With `image_size` every image is resized (shorter side) and centre-cropped to image_size x image_size;
    without it the images must all have one size. Decoded pixels are cached (`_read_cache`), so a folder is
    decoded once until its contents change (`contents_digest`).
    """
    folders = image_splits(root)
    key = hashlib.sha256(json.dumps({"version": CACHE_VERSION, "image_size": image_size,
                                     "contents": contents_digest(folders)}).encode()).hexdigest()
    tensors = _read_cache(root, image_size, key)
    if tensors is None:
        start = time.perf_counter()
        tensors = {}
        for split, folder in folders.items():
            tensors[f"{split}_x"], tensors[f"{split}_y"] = _decode(folder, image_size, progress)
        sizes = {tuple(tensors[f"{split}_x"].shape[2:]) for split in folders}
        if len(sizes) > 1:
            raise DatasetError(f"the images of {root}/train and {root}/test have different sizes "
                               f"({' and '.join('x'.join(map(str, s)) for s in sorted(sizes))}): "
                               "set data.image_size=N to resize them all to N x N")
        log.info("imagefolder: decoded %d images of %s in %.1f s", sum(len(f.samples) for f in folders.values()),
                 root, time.perf_counter() - start)
        _write_cache(root, image_size, key, tensors)
    return tensors, list(folders["train"].classes)


def image_folder_identity(root: str | Path | None, with_mtimes: bool = False) -> str:
    """What a run made from the image folder `root` depends on, as 16 hex digits: the class names in their
    label order and every image's path, size and bytes (`contents_digest`). with_mtimes: the identity as runs
    recorded it before modification times were left out, which they match while their files are untouched."""
    return contents_digest(image_splits(resolve_data_dir(root)), with_mtimes)[:16]


def image_splits(root: Path) -> dict[str, ImageFolder]:
    """The train/ and test/ ImageFolders of `root`, checked: the same classes, and links that stay in place."""
    folders = {split: _image_split(root, split) for split in ("train", "test")}
    train_classes, test_classes = folders["train"].classes, folders["test"].classes
    if train_classes != test_classes:
        only_train = [_shown(c) for c in sorted(set(train_classes) - set(test_classes))] or ["-"]
        only_test = [_shown(c) for c in sorted(set(test_classes) - set(train_classes))] or ["-"]
        normal = {unicodedata.normalize("NFC", c) for c in train_classes + test_classes}
        hint = (" (some differ only in how their Unicode accents are encoded)"
                if len(normal) < len(set(train_classes) | set(test_classes)) else "")
        raise DatasetError(f"the class folders of {root}/train and {root}/test differ (only in train/: "
                           f"{', '.join(only_train)}; only in test/: {', '.join(only_test)}){hint}: "
                           "give both splits the same class folders")
    for folder in folders.values():
        _check_links(folder)
    return folders


def _shown(name: str) -> str:
    """A class name as the user can tell it apart: escaped unless it is plain ASCII."""
    return name if name.isascii() and name.isprintable() else ascii(name)


def _check_links(folder: ImageFolder) -> None:
    """Refuse symbolic links that leave their class folder, loop, reach a file twice or lead nowhere:
    torchvision follows them, so they would read images under the wrong label, or many times over.

    Folders are resolved and listed once each (their links known from the listing); a file is resolved only
    where it is a link, so 60,000 plain files cost one dictionary look-up each.
    """
    folders: dict[str, tuple[str, set[str]]] = {}  # folder -> (its real path, the names of the links in it)
    reached: dict[str, str] = {}  # real folder (or a link's real target) -> the path that reached it first
    names: dict[str, set[str]] = {}  # real folder -> the plain files read from it
    targets: list[tuple[str, str]] = []  # (link, its real target)
    for path, label in folder.samples:
        directory, name = os.path.split(path)
        if directory not in folders:
            home = os.path.realpath(os.path.join(folder.root, folder.classes[label]))
            real = os.path.realpath(directory)
            if os.path.commonpath([home, real]) != home:
                raise DatasetError(f"{directory} is a link to {real}, outside its class folder {home}, so its "
                                   "images' labels would be wrong: copy the images there, or move the link")
            if real in reached:
                raise DatasetError(f"{directory} and {reached[real]} are the same folder (a link loop or a second "
                                   "link): each image must be read once; delete the extra link")
            reached[real] = directory
            with os.scandir(directory) as entries:
                folders[directory] = (real, {entry.name for entry in entries if entry.is_symlink()})
        real_dir, links = folders[directory]
        if name not in links:
            names.setdefault(real_dir, set()).add(name)
            continue
        home = os.path.realpath(os.path.join(folder.root, folder.classes[label]))
        target = os.path.realpath(path)
        if not os.path.exists(target):
            raise DatasetError(f"{path} is a link to {target}, which does not exist: fix the link or delete it")
        if os.path.commonpath([home, target]) != home:
            raise DatasetError(f"{path} is a link to {target}, outside its class folder {home}, so its label would "
                               "be wrong: copy the image there, or move the link")
        targets.append((path, target))
    for path, target in targets:
        directory, name = os.path.split(target)
        if name in names.get(directory, ()) or target in reached:
            raise DatasetError(f"{path} and {reached.get(target, target)} are the same file (a second link): each "
                               "image must be read once; delete the extra link")
        reached[target] = path


def contents_digest(folders: dict[str, ImageFolder], with_mtimes: bool = False) -> str:
    """sha256 over the class names in label order and each image's split, path, size and bytes.

    The modification time is left out: a copied or re-mounted folder holds the same images, and the runs made from
    it stay finished. Hashing the bytes catches a same-size replacement (a relabelled or copied-over file); on the
    CIFAR-10 JPEG copy (60,000 files, 57 MB) it costs 1 to 2 s on 2 cores once the files are in the page
    cache. A process hashes a folder once while every file's inode and change time stay the same
    (`_digest_of_listing`).
    """
    listing = []
    for split, folder in folders.items():
        for path, _ in folder.samples:
            stat = os.stat(path)
            relative = path[len(folder.root) + 1:]  # <class>/<file>; os.path.relpath is 10x slower
            listing.append((split, relative, path, stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_ctime_ns))
    classes = tuple(tuple(folder.classes) for folder in folders.values())
    return _digest_of_listing(classes, tuple(listing), with_mtimes)


@functools.lru_cache(maxsize=4)
def _digest_of_listing(classes: tuple[tuple[str, ...], ...], listing: tuple[tuple, ...], with_mtimes: bool) -> str:
    digest = hashlib.sha256(json.dumps(classes).encode())
    for split, relative, path, size, mtime, _, _ in listing:
        digest.update(json.dumps([split, relative, size, mtime] if with_mtimes else [split, relative, size]).encode())
        with open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def _image_split(root: Path, split: str) -> ImageFolder:
    """torchvision's ImageFolder over root/`split` (it only lists the files), with its problems as DatasetError."""
    from torchvision.datasets import ImageFolder
    from torchvision.datasets.folder import IMG_EXTENSIONS

    path = root / split
    if not path.is_dir():
        raise DatasetError(f"{path} is missing: an image folder needs train/<class>/ and test/<class>/ folders "
                           "of images (torchvision's ImageFolder layout); pass the folder holding them as "
                           "--data-dir")
    try:
        folder = ImageFolder(str(path), allow_empty=True)
    except FileNotFoundError:  # no class folders at all
        raise DatasetError(f"{path} holds no class folders: put each class's images in {path}/<class>/") from None
    counts = np.bincount([label for _, label in folder.samples], minlength=len(folder.classes))
    empty = [name for name, count in zip(folder.classes, counts, strict=True) if count == 0]
    if empty:
        raise DatasetError(f"{path}/{empty[0]} holds no images ({' '.join(IMG_EXTENSIONS)}): add images to it "
                           "or remove the folder")
    return folder


def _cache_paths(root: Path, image_size: int | None) -> list[Path]:
    """Where the cache may live, in order: inside the data folder, and under the user's home.

    One file per folder and image size: a changed folder overwrites its stale cache instead of adding one.
    """
    name = f"imagefolder-{image_size or 'native'}.safetensors"
    folder_id = hashlib.sha256(str(root).encode()).hexdigest()[:16]  # which data folder a home cache is for
    return [root / CACHE_FOLDER / name, USER_CACHE_DIR.expanduser() / f"{folder_id}-{name}"]


def _writable(root: Path) -> bool:
    """Whether the cache may be written inside the data folder `root`.

    Not when the folder has no write bit at all, even for root (who may write anyway): such a folder is
    meant to be read-only, like a shared copy of a dataset.
    """
    return os.access(root, os.W_OK) and bool(root.stat().st_mode & 0o222)


def _read_cache(root: Path, image_size: int | None, key: str) -> dict[str, torch.Tensor] | None:
    """The cached tensors whose key matches the folder as it is now, or None (no cache, stale or corrupt)."""
    for path in _cache_paths(root, image_size):
        if not path.is_file():
            continue
        try:
            tensors, meta = load_tensors(path)
        except ArtifactError:  # corrupt (e.g. a disk filled up while copying it): decode again
            continue
        if meta.get("key") != key:
            continue
        if _complete(tensors):
            return tensors
        log.warning("imagefolder: the cache %s is incomplete; decoding the images again", path)
    return None


def _complete(tensors: dict[str, torch.Tensor]) -> bool:
    """Whether a cache holds what `_write_cache` writes: uint8 images [n, 3, H, W] and labels [n] per split."""
    for split in ("train", "test"):
        x, y = tensors.get(f"{split}_x"), tensors.get(f"{split}_y")
        if (x is None or y is None or x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3
                or y.dim() != 1 or len(y) != len(x)):
            return False
    return tensors["train_x"].shape[2:] == tensors["test_x"].shape[2:]


def _write_cache(root: Path, image_size: int | None, key: str, tensors: dict[str, torch.Tensor]) -> None:
    """Save the decoded tensors atomically in the first cache place that can be written."""
    inside, home = _cache_paths(root, image_size)
    for path in ([inside] if _writable(root) else []) + [home]:
        try:
            save_tensors(path, tensors, {"key": key, "root": str(root)})
        except OSError:  # a read-only file system, a full disk: try the next place
            continue
        log.info("imagefolder: cached the decoded images in %s", path)
        return
    log.warning("imagefolder: could not write a cache (tried %s); the images will be decoded again next time",
                ", ".join(map(str, _cache_paths(root, image_size))))


def _decode(folder: ImageFolder, image_size: int | None, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode every image of an ImageFolder: x [n, 3, H, W] uint8, y [n] int64.

    One thread: on 2 cores neither threads nor processes decoded 32x32 JPEGs faster (each image is
    ~0.2 ms, mostly Python and file overhead), so the simple loop stays.
    """
    from torchvision.transforms.functional import center_crop, resize

    n = len(folder.samples)
    pixels: np.ndarray | None = None  # [n, H, W, 3], allocated once the first image gives the size
    first = ""
    for i, (path, _) in enumerate(progress_bar(folder.samples, progress, desc=f"decode {Path(folder.root).name}/",
                                               unit="img", mininterval=1.0)):
        try:
            image = _rgb(path)
            if image_size is not None:
                image = center_crop(resize(image, image_size), image_size)
            array = np.asarray(image, dtype=np.uint8)
        except Image.DecompressionBombError as e:
            raise DatasetError(f"the image {path} is too large to decode safely ({_first_line(e)}): shrink it "
                               "or delete it") from None
        except (OSError, ValueError, SyntaxError) as e:  # what PIL raises for truncated or non-image files
            raise DatasetError(f"cannot read the image {path} ({type(e).__name__}: {_first_line(e)}): "
                               "replace or delete it") from None
        if pixels is None:
            pixels, first = np.empty((n, *array.shape), dtype=np.uint8), path
        elif array.shape != pixels.shape[1:]:
            raise DatasetError(f"the images differ in size ({path} is {array.shape[1]}x{array.shape[0]}, {first} "
                               f"is {pixels.shape[2]}x{pixels.shape[1]}): set data.image_size=N to resize "
                               "them all to N x N")
        pixels[i] = array
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor([label for _, label in folder.samples], dtype=torch.int64)


def _rgb(path: str) -> Image.Image:
    """An image file as 8-bit RGB. 16-bit greyscale (PIL mode I;16 or I) is scaled to 8 bits, not clipped:
    PIL's convert("RGB") would turn every value above 255, most of a 16-bit image, white."""
    with open(path, "rb") as f:
        image = Image.open(f)
        image.load()
    if image.mode.startswith("I"):
        wide = np.asarray(image).astype(np.int64)
        if wide.min() < 0 or wide.max() > 65535:
            raise ValueError(f"mode {image.mode} values {wide.min()}..{wide.max()} are not 16-bit pixels")
        image = Image.fromarray((wide * 255 / 65535).round().astype(np.uint8))
    elif image.mode == "F":
        raise ValueError("floating-point pixels (mode F) have no fixed range to scale to 8 bits")
    return image.convert("RGB")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]
