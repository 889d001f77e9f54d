import pytest
import torch

from pdiff.tasks.datasets import DatasetError, Split, TensorLoader, load_dataset, resolve_data_dir
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


def test_loader_covers_every_example_once() -> None:
    split = Split(torch.arange(10).float().view(10, 1), torch.arange(10))
    loader = TensorLoader(split, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 3
    seen = torch.cat([y for _, y in loader])
    assert sorted(seen.tolist()) == list(range(10))
