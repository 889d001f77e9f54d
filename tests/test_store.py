import pytest
import torch

from pdiff.errors import ArtifactError
from pdiff.store import load_json, load_tensors, save_json, save_tensors


def test_tensors_round_trip_with_metadata(tmp_path) -> None:
    path = tmp_path / "sub" / "x.safetensors"
    save_tensors(path, {"a": torch.arange(6).view(2, 3).T}, {"spec": {"names": ["a"]}, "k": 3})
    tensors, meta = load_tensors(path)
    assert torch.equal(tensors["a"], torch.arange(6).view(2, 3).T)
    assert meta == {"spec": {"names": ["a"]}, "k": 3}
    assert [p.name for p in path.parent.iterdir()] == ["x.safetensors"]  # no temporary file left


def test_failed_write_leaves_nothing(tmp_path) -> None:
    path = tmp_path / "x.safetensors"
    with pytest.raises(TypeError):
        save_tensors(path, {"a": torch.zeros(2)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_truncated_file_is_a_clear_error(tmp_path) -> None:
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"a": torch.zeros(100)}, {})
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ArtifactError, match="corrupt"):
        load_tensors(path)


def test_missing_file_names_the_stage(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="does not exist"):
        load_tensors(tmp_path / "none.safetensors")


def test_json_round_trip_and_corruption(tmp_path) -> None:
    save_json(tmp_path / "r.json", {"a": [1, 2]})
    assert load_json(tmp_path / "r.json") == {"a": [1, 2]}
    (tmp_path / "r.json").write_text("{broken")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_json(tmp_path / "r.json")
