"""Image folders (`pdiff.tasks.imagefolder`): generated PNG and JPEG files in torchvision's ImageFolder layout,
loaded, cached, checked and identified by their contents."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pdiff.tasks.imagefolder as imagefolder
from pdiff.store import load_tensors, save_tensors
from pdiff.tasks.datasets import CropFlip, DatasetError, augmentation, load_dataset
from tests.conftest import write_image_folder

# ---- imagefolder: generated PNG and JPEG files in torchvision's ImageFolder layout -----------------------
COUNTS = {"train": {"cat": 6, "dog": 6}, "test": {"cat": 2, "dog": 3}}


@pytest.fixture
def images(tmp_path, monkeypatch) -> Path:
    """A tiny image folder, and a home folder of the test's own (the read-only fallback cache goes there)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_image_folder(tmp_path / "images", COUNTS)
    return tmp_path / "images"


def _count_decodes(monkeypatch) -> list[str]:
    """Record every split `_decode` reads (it still decodes)."""
    calls, decode = [], imagefolder._decode
    monkeypatch.setattr(imagefolder, "_decode",
                        lambda folder, *args: calls.append(folder.root) or decode(folder, *args))
    return calls


def test_image_folder_loads_normalised_with_validation_split(images) -> None:
    data = load_dataset("imagefolder", images, val_size=2, progress=False)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 2, 5)
    assert data.input_shape == (3, 8, 8) and data.num_classes == 2
    assert data.test.y.tolist() == [0, 0, 1, 1, 1]  # class folders in sorted order: cat=0, dog=1
    train = torch.cat([data.train.x, data.val.x])  # the statistics come from all of train/
    assert torch.allclose(train.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(train.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    assert augmentation("imagefolder", data.input_shape) == CropFlip(1)  # 32x32 images get CIFAR's padding 4


def test_image_folder_cache_holds_the_pixels_and_skips_decoding(images, monkeypatch) -> None:
    first = load_dataset("imagefolder", images, val_size=2, progress=False)
    cached, _ = load_tensors(images / ".pdiff-cache" / "imagefolder-native.safetensors")
    png = np.array(Image.open(images / "test" / "dog" / "000.png"))  # lossless: the exact pixels
    assert torch.equal(cached["test_x"][2], torch.from_numpy(png).permute(2, 0, 1))
    assert cached["train_x"].dtype == torch.uint8

    def fail(*args):
        raise AssertionError("decoded again although the folder did not change")

    monkeypatch.setattr(imagefolder, "_decode", fail)
    again = load_dataset("imagefolder", images, val_size=2, progress=False)
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)


def test_a_changed_image_folder_is_read_again(images, monkeypatch) -> None:
    load_dataset("imagefolder", images, val_size=2, progress=False)
    calls = _count_decodes(monkeypatch)
    Image.new("RGB", (8, 8), (255, 0, 0)).save(images / "test" / "cat" / "new.png")  # a file added
    assert len(load_dataset("imagefolder", images, val_size=2, progress=False).test) == 6 and len(calls) == 2
    replaced = images / "test" / "cat" / "000.png"
    Image.new("RGB", (8, 8), (0, 255, 0)).save(replaced)  # a file replaced: same name, new content
    stat = replaced.stat()
    os.utime(replaced, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # a new mtime even on a coarse clock
    load_dataset("imagefolder", images, val_size=2, progress=False)
    assert len(calls) == 4
    cached, _ = load_tensors(images / ".pdiff-cache" / "imagefolder-native.safetensors")
    assert cached["test_x"][0, :, 0, 0].tolist() == [0, 255, 0]
    load_dataset("imagefolder", images, val_size=2, progress=False)
    assert len(calls) == 4  # and then cached again


def test_read_only_image_folder_caches_under_home(images, monkeypatch) -> None:
    images.chmod(0o555)
    try:
        load_dataset("imagefolder", images, val_size=2, progress=False)
        calls = _count_decodes(monkeypatch)
        load_dataset("imagefolder", images, val_size=2, progress=False)
    finally:
        images.chmod(0o755)
    assert not (images / ".pdiff-cache").exists() and calls == []
    assert len(list((images.parent / "home" / ".cache" / "pdiff" / "imagefolder").glob("*.safetensors"))) == 1


def test_image_size_resizes_images_of_different_sizes(images) -> None:
    Image.new("RGB", (12, 10)).save(images / "train" / "dog" / "large.png")
    with pytest.raises(DatasetError, match=r"large.png is 12x10, .* is 8x8\): set data.image_size=N"):
        load_dataset("imagefolder", images, val_size=2, progress=False)
    data = load_dataset("imagefolder", images, val_size=2, image_size=6, progress=False)
    assert data.input_shape == (3, 6, 6) and len(data.train) == 11
    assert (images / ".pdiff-cache" / "imagefolder-6.safetensors").is_file()


def _flatten_test_split(root: Path) -> None:
    """Move the test images out of their class folders, straight into test/."""
    for image in list((root / "test").rglob("*.*")):
        image.rename(root / "test" / f"{image.parent.name}-{image.name}")
    for folder in (root / "test").iterdir():
        if folder.is_dir():
            folder.rmdir()


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "test" / "dog").rename(root / "test" / "dogs"), "only in train/: dog; only in test/: dogs"),
    (lambda root: (root / "train" / "cat" / "001.jpg").write_bytes(b"not a jpeg"), "cannot read the image .*001.jpg"),
    (lambda root: (root / "train" / "bird").mkdir(), "train/bird holds no images"),
    (_flatten_test_split, "test holds no class folders"),
    (lambda root: (root / "train").rename(root / "training"), "train is missing"),
], ids=["classes-differ", "unreadable", "empty-class", "no-class-folders", "no-train"])
def test_image_folder_problems_are_one_clear_error(images, damage, message) -> None:
    damage(images)
    with pytest.raises(DatasetError, match=message):
        load_dataset("imagefolder", images, val_size=2, progress=False)


def test_sixteen_bit_greyscale_is_scaled_not_clipped(images) -> None:
    """PIL's convert('RGB') clips 16-bit values to 255 (white); they are scaled to 8 bits instead."""
    for path in (images / "test" / "cat").iterdir():
        path.unlink()
    wide = np.array([[0, 257, 32896, 65535]] * 4, dtype=np.uint16).repeat(2, axis=1)  # [4, 8]
    Image.fromarray(wide).resize((8, 8), Image.NEAREST).save(images / "test" / "cat" / "wide.png")
    assert Image.open(images / "test" / "cat" / "wide.png").mode.startswith("I")
    load_dataset("imagefolder", images, val_size=2, progress=False)
    cached, _ = load_tensors(images / ".pdiff-cache" / "imagefolder-native.safetensors")
    assert cached["test_x"][0, :, 0, ::2].tolist() == [[0, 1, 128, 255]] * 3


def test_a_broken_cache_is_rebuilt(images, monkeypatch) -> None:
    """A cache with the right key but a tensor missing (cut short by hand, or by another tool) is decoded anew."""
    load_dataset("imagefolder", images, val_size=2, progress=False)
    path = images / ".pdiff-cache" / "imagefolder-native.safetensors"
    tensors, meta = load_tensors(path)
    del tensors["test_y"]
    save_tensors(path, tensors, meta)
    calls = _count_decodes(monkeypatch)
    data = load_dataset("imagefolder", images, val_size=2, progress=False)
    assert len(calls) == 2 and data.test.y.tolist() == [0, 0, 1, 1, 1]
    assert "test_y" in load_tensors(path)[0]


def test_a_same_size_same_mtime_replacement_is_read_again(images, monkeypatch) -> None:
    """An uncompressed BMP keeps its size whatever its colours: the listing alone would not see the change."""
    path = images / "test" / "cat" / "plain.bmp"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    load_dataset("imagefolder", images, val_size=2, progress=False)
    stat = path.stat()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    calls = _count_decodes(monkeypatch)
    load_dataset("imagefolder", images, val_size=2, progress=False)
    cached, _ = load_tensors(images / ".pdiff-cache" / "imagefolder-native.safetensors")
    assert len(calls) == 2 and cached["test_x"][2, :, 0, 0].tolist() == [0, 0, 255]


def test_the_identity_follows_contents_and_class_order(images) -> None:
    identity = imagefolder.image_folder_identity(images)
    assert imagefolder.image_folder_identity(images) == identity and len(identity) == 16
    for split in ("train", "test"):  # the same files under renamed classes: another order of labels
        (images / split / "cat").rename(images / split / "zebra")
    assert imagefolder.image_folder_identity(images) != identity


def test_a_copied_folder_keeps_its_identity(images, tmp_path) -> None:
    """New modification times on the same bytes (a copy, a fresh mount) are the same data: its runs stay done."""
    identity = imagefolder.image_folder_identity(images)
    copy = tmp_path / "copy"
    shutil.copytree(images, copy, ignore=shutil.ignore_patterns(".pdiff-cache"))  # copytree gives new mtimes
    for path in copy.rglob("*.png"):
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert imagefolder.image_folder_identity(copy) == identity
