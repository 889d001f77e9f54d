import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import pdiff.tasks.datasets as datasets
from pdiff.store import load_tensors
from pdiff.tasks.datasets import (
    CropFlip,
    DatasetError,
    Split,
    TensorLoader,
    augmentation,
    load_dataset,
    resolve_data_dir,
)
from tests.conftest import SHARED_DATA, write_image_folder


def test_mnist1d_is_generated_with_a_validation_split() -> None:
    data = load_dataset("mnist1d", val_size=100, num_samples=1000)
    assert (len(data.train), len(data.val), len(data.test)) == (700, 100, 200)
    assert data.input_shape == (1, 40) and data.num_classes == 10
    assert data.train.x.dtype == torch.float32 and data.train.y.dtype == torch.int64
    again = load_dataset("mnist1d", val_size=100, num_samples=1000)
    assert torch.equal(data.val.x, again.val.x)  # deterministic


def test_missing_dataset_names_the_directory(tmp_path) -> None:
    with pytest.raises(DatasetError, match=f"MNIST is not in {tmp_path}.*--data-dir"):
        load_dataset("mnist", tmp_path, download=False)


def test_unknown_dataset_and_bad_val_size() -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(DatasetError, match="val_size"):
        load_dataset("mnist1d", val_size=5000, num_samples=1000)


def test_data_dir_resolution(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("PDIFF_DATA", str(tmp_path))
    assert resolve_data_dir(None) == tmp_path
    assert resolve_data_dir(tmp_path / "x") == tmp_path / "x"


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="no MNIST copy in ../shared/data")
def test_real_mnist_from_the_shared_folder() -> None:
    data = load_dataset("mnist", SHARED_DATA, val_size=5000, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.input_shape == (1, 28, 28)
    assert abs(data.train.x.mean().item()) < 0.05  # normalised


def test_loader_covers_every_example_once() -> None:
    split = Split(torch.arange(10).float().view(10, 1), torch.arange(10))
    loader = TensorLoader(split, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 3
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == list(range(10))


# ---- CIFAR and STL-10 from fake files in torchvision's on-disk format (no download) ----------------
def _no_md5_check(monkeypatch) -> None:
    """The fake files cannot match torchvision's md5 sums of the real archives."""
    import torchvision.datasets.cifar as cifar
    import torchvision.datasets.stl10 as stl10

    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(stl10, "check_integrity", lambda *args, **kwargs: True)


def _fake_cifar(root, folder: str, files: dict[str, int], meta: str, names_key: str, labels_key: str,
                num_classes: int) -> None:
    """Pickled batches as torchvision reads them: data [n, 3072] uint8 (CHW order), labels list."""
    import pickle

    path = root / folder
    path.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in files.items():
        batch = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 labels_key: [i % num_classes for i in range(n)]}
        (path / name).write_bytes(pickle.dumps(batch))
    (path / meta).write_bytes(pickle.dumps({names_key: [f"class{i}" for i in range(num_classes)]}))


def test_fake_cifar10_loads_with_validation_split(monkeypatch, tmp_path) -> None:
    _no_md5_check(monkeypatch)
    files = {f"data_batch_{i}": 20 for i in range(1, 6)} | {"test_batch": 30}
    _fake_cifar(tmp_path, "cifar-10-batches-py", files, "batches.meta", "label_names", "labels", 10)
    data = load_dataset("cifar10", tmp_path, val_size=10, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (90, 10, 30)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert data.test.y.tolist() == [i % 10 for i in range(30)]


def test_fake_cifar100_loads(monkeypatch, tmp_path) -> None:
    _no_md5_check(monkeypatch)
    _fake_cifar(tmp_path, "cifar-100-python", {"train": 120, "test": 40}, "meta", "fine_label_names",
                "fine_labels", 100)
    data = load_dataset("cifar100", tmp_path, val_size=20, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (100, 20, 40)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 100


def test_fake_stl10_binary_loads(monkeypatch, tmp_path) -> None:
    _no_md5_check(monkeypatch)
    path = tmp_path / "stl10_binary"
    path.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 8)):
        rng.integers(0, 256, n * 3 * 96 * 96, dtype=np.uint8).tofile(path / f"{split}_X.bin")
        (np.arange(n, dtype=np.uint8) % 10 + 1).tofile(path / f"{split}_y.bin")  # labels are 1-based on disk
    (path / "unlabeled_X.bin").write_bytes(b"")
    (path / "class_names.txt").write_text("\n".join(f"class{i}" for i in range(10)))
    data = load_dataset("stl10", tmp_path, val_size=2, download=False)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 2, 8)
    assert data.input_shape == (3, 96, 96) and data.num_classes == 10
    assert data.test.y.tolist() == [i % 10 for i in range(8)]


def test_missing_cifar_names_the_folder(tmp_path) -> None:
    with pytest.raises(DatasetError, match="cifar-10-batches-py"):
        load_dataset("cifar10", tmp_path, download=False)


def test_crop_flip_moves_pixels_but_keeps_shape() -> None:
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = CropFlip(padding=2)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    flipped_only = CropFlip(padding=0)(x, torch.Generator().manual_seed(1))
    assert torch.equal(flipped_only.sort(-1).values, x.sort(-1).values)  # each row keeps its pixels


def test_augmentation_only_for_cifar_and_stl_training_batches() -> None:
    assert augmentation("mnist", (1, 28, 28)) is None and augmentation("mnist1d", (1, 40)) is None
    assert augmentation("cifar10", (3, 32, 32)) == CropFlip(4)
    assert augmentation("stl10", (3, 96, 96)) == CropFlip(12)
    split = Split(torch.randn(6, 3, 8, 8), torch.arange(6))
    plain = next(iter(TensorLoader(split, 6)))[0]
    augmented = next(iter(TensorLoader(split, 6, augment=CropFlip(2), generator=torch.Generator())))[0]
    assert torch.equal(plain, split.x) and not torch.equal(augmented, split.x)


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
    calls, decode = [], datasets._decode
    monkeypatch.setattr(datasets, "_decode", lambda folder, *args: calls.append(folder.root) or decode(folder, *args))
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

    monkeypatch.setattr(datasets, "_decode", fail)
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
    datasets.save_tensors(path, tensors, meta)
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
    identity = datasets.image_folder_identity(images)
    assert datasets.image_folder_identity(images) == identity and len(identity) == 16
    for split in ("train", "test"):  # the same files under renamed classes: another order of labels
        (images / split / "cat").rename(images / split / "zebra")
    assert datasets.image_folder_identity(images) != identity
