import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

from pdiff import store
from pdiff.errors import ArtifactError, StorageError
from pdiff.store import load_json, load_tensors, save_json, save_tensors, save_text


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


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_mode_open_would_give_them(tmp_path, umask) -> None:
    old = os.umask(umask)
    try:
        save_text(tmp_path / "report.html", "<p>")
        save_tensors(tmp_path / "x.safetensors", {"a": torch.zeros(2)}, {})
    finally:
        os.umask(old)
    for name in ("report.html", "x.safetensors"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


def test_other_float_types_load_as_float32(tmp_path) -> None:
    tensors = {"half": torch.ones(2, dtype=torch.float16), "bf16": torch.ones(2, dtype=torch.bfloat16),
               "double": torch.ones(2, dtype=torch.float64), "index": torch.arange(2)}
    save_file(tensors, str(tmp_path / "x.safetensors"))
    loaded, _ = load_tensors(tmp_path / "x.safetensors")
    assert {k: v.dtype for k, v in loaded.items()} == {"half": torch.float32, "bf16": torch.float32,
                                                         "double": torch.float32, "index": torch.int64}


def test_a_full_disk_is_a_storage_error_naming_the_space_and_leaves_nothing(tmp_path, monkeypatch) -> None:
    def full(tensors, filename, metadata=None) -> None:  # as safetensors fails on a full disk
        Path(filename).write_bytes(b"\0" * 10)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(store, "save_file", full)
    with pytest.raises(StorageError, match=r"cannot write .*x\.safetensors: no space left on the device \(it needs "
                                           r"about 3\.8 MiB more\): free some space"):
        save_tensors(tmp_path / "x.safetensors", {"a": torch.zeros(1000, 1000)}, {})
    assert list(tmp_path.iterdir()) == []


def test_a_folder_we_may_not_write_is_a_storage_error(tmp_path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(StorageError, match="cannot write .*file/x.json .*fix the folder's permissions"):
        save_json(tmp_path / "file" / "x.json", {})
