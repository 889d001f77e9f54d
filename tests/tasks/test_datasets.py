import numpy as np
import pytest
import torch

from pdiff.tasks.datasets import (
    CropFlip,
    DatasetError,
    Split,
    TensorLoader,
    augmentation,
    load_dataset,
    resolve_data_dir,
)
from tests.conftest import SHARED_DATA


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


@pytest.mark.skipif(not (SHARED_DATA / "MNIST" / "raw").is_dir(), reason="no MNIST copy in ../shared/data")
def test_turned_mnist_is_mnist_turned_a_quarter_turn_with_the_same_validation_digits() -> None:
    upright = load_dataset("mnist", SHARED_DATA, val_size=5000, download=False)
    turned = load_dataset("mnist-rot90", SHARED_DATA, val_size=5000, download=False)
    for a, b in ((upright.val, turned.val), (upright.test, turned.test)):
        assert torch.equal(b.x, a.x.rot90(1, (2, 3))) and torch.equal(b.y, a.y)


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
