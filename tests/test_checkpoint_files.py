import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pdiff.checkpoint_files import (
    MODEL_FILE,
    READERS,
    check_against,
    digest,
    find,
    find_one,
    identity,
    read_checkpoints,
    read_state_dict,
)
from pdiff.errors import ArtifactError, ConfigError, SelectionError
from pdiff.params import ParamSpec


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in model.state_dict().items()}


def test_every_kind_reads_the_same_state_dict(tmp_path: Path) -> None:
    state = state_of(small_model())
    save_file(state, str(tmp_path / "a.safetensors"))
    torch.save(state, tmp_path / "b.pt")
    torch.save({"epoch": 3, "model": state}, tmp_path / "c.pth")
    (tmp_path / "d").mkdir()
    save_file(state, str(tmp_path / "d" / MODEL_FILE))
    for path, key in [("a.safetensors", None), ("b.pt", None), ("c.pth", "model"), ("d", None)]:
        read = read_state_dict(tmp_path / path, "collect.from", key)
        assert read.keys() == state.keys()
        assert all(torch.equal(read[n], state[n]) and read[n].dtype == state[n].dtype for n in state), path


def test_natural_order_and_globs(tmp_path: Path) -> None:
    state = state_of(small_model())
    for i in (10, 2, 1, 11):
        torch.save(state, tmp_path / f"ckpt_{i}.pt")
    assert [p.name for p in find(str(tmp_path / "ckpt_*.pt"), "collect.from")] == [
        "ckpt_1.pt", "ckpt_2.pt", "ckpt_10.pt", "ckpt_11.pt"]
    assert [p.name for p in find(str(tmp_path / "**" / "*.pt"), "collect.from")][-1] == "ckpt_11.pt"


def test_a_new_kind_of_checkpoint_is_one_registry_entry(tmp_path: Path, monkeypatch) -> None:
    """A reader added to READERS is asked first-come for every path: the seam other formats plug into."""
    state = state_of(small_model())

    class NumbersFolder:
        kind = "folders holding a numbers.pt"

        def accepts(self, path: Path) -> bool:
            return path.is_dir() and (path / "numbers.pt").is_file()

        def files(self, path: Path) -> list[Path]:
            return [path / "numbers.pt"]

        def read(self, path: Path, state_dict_key: str | None) -> dict[str, torch.Tensor]:
            return {name: t * 2 for name, t in torch.load(path / "numbers.pt", weights_only=True).items()}

    monkeypatch.setitem(READERS, "numbers", NumbersFolder())
    (tmp_path / "run").mkdir()
    torch.save(state, tmp_path / "run" / "numbers.pt")
    assert find(str(tmp_path / "r*"), "collect.from") == [tmp_path / "run"]
    read = read_state_dict(tmp_path / "run", "collect.from")
    assert torch.equal(read["0.weight"], 2 * state["0.weight"])
    assert digest(tmp_path / "run", "collect.from")
    with pytest.raises(ConfigError, match="or folders holding a numbers.pt"):  # the messages name the new kind
        find(str(tmp_path / "nothing*"), "collect.from")


def test_identity_follows_the_bytes_not_the_path(tmp_path: Path) -> None:
    state = state_of(small_model())
    save_file(state, str(tmp_path / "a.safetensors"))
    first = identity(str(tmp_path / "*.safetensors"), "collect.from")
    os.rename(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert identity(str(tmp_path / "*.safetensors"), "collect.from") == first  # moved: the same checkpoint
    state["0.bias"] += 1
    save_file(state, str(tmp_path / "b.safetensors"))
    later = os.stat(tmp_path / "b.safetensors").st_mtime_ns + 10**9  # a later version, however coarse the clock
    os.utime(tmp_path / "b.safetensors", ns=(later, later))
    assert identity(str(tmp_path / "*.safetensors"), "collect.from") != first


def test_the_subset_is_cut_and_differences_outside_it_are_named(tmp_path: Path, caplog) -> None:
    model = small_model()
    spec = ParamSpec.select(model, "1.*")  # the BatchNorm's affine parameters
    base = state_of(model)
    rows = []
    for i in range(3):
        state = state_of(model)
        state["1.weight"] += i
        if i == 2:
            state["1.running_mean"] += 1  # a buffer outside the subset
        torch.save(state, tmp_path / f"c{i}.pt")
        rows.append(spec.flatten(state))
    with caplog.at_level(logging.WARNING, logger="pdiff.checkpoint_files"):
        params = read_checkpoints(find(str(tmp_path / "c*.pt"), "collect.from"), "collect.from", spec, base)
    assert torch.equal(params, torch.stack(rows))
    assert len(caplog.records) == 1 and "1.running_mean" in caplog.text and "c2.pt" in caplog.text
    assert "1.weight" not in caplog.text


def _wrong(change) -> dict[str, torch.Tensor]:
    state = state_of(small_model())
    change(state)
    return state


class Opaque:  # a class weights_only=True refuses to unpickle
    pass


BAD = {  # id: (write the file at path, error class, words the one line must hold)
    "unreadable-pt": (lambda p: p.write_bytes(b"not a zip"), ArtifactError, "is not a readable torch file"),
    "unreadable-safetensors": (lambda p: p.with_suffix(".safetensors").write_bytes(b"\x08\x00junk"), ArtifactError,
                               "is not a readable safetensors file"),
    "pickle-refused": (lambda p: torch.save({"model": state_of(small_model()), "opaque": Opaque()}, p),
                       ArtifactError, "Opaque) besides tensors, which pdiff does not unpickle"),
    "not-a-state-dict": (lambda p: torch.save([torch.zeros(2)], p), ArtifactError, "holds a list, not a state_dict"),
    "wrapped-without-key": (lambda p: torch.save({"epoch": 1, "net": state_of(small_model())}, p), ArtifactError,
                            "set collect.state_dict_key=net"),
    "name": (lambda p: torch.save(_wrong(lambda s: s.update({"module.0.weight": s.pop("0.weight")})), p),
             SelectionError, "holds 'module.0.weight', which the model has not"),
    "shape": (lambda p: torch.save(_wrong(lambda s: s.update({"2.bias": torch.zeros(3)})), p), SelectionError,
              "'2.bias' is (3,) but the model's is (2,)"),
    "dtype": (lambda p: torch.save(_wrong(lambda s: s.update({"0.bias": s["0.bias"].half()})), p), SelectionError,
              "'0.bias' is torch.float16 but the model's is torch.float32"),
    "not-finite": (lambda p: torch.save(_wrong(lambda s: s["1.weight"].fill_(float("nan"))), p), ArtifactError,
                   "holds NaN or Inf in the parameters of collect.subset"),
    "missing": (lambda p: torch.save(_wrong(lambda s: s.pop("2.weight")), p), SelectionError,
                "lacks '2.weight' of the model"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_each_bad_checkpoint_is_one_line(tmp_path: Path, case: str) -> None:
    write, error, words = BAD[case]
    write(tmp_path / "ckpt.pt")
    path = next(tmp_path.iterdir())
    model = small_model()
    with pytest.raises(error) as raised:
        check_against(read_state_dict(path, "collect.from"), model.state_dict(), path)
        read_checkpoints([path], "collect.from", ParamSpec.select(model, "1.*"), model.state_dict())
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_state_dict_key_and_bad_globs_are_one_line(tmp_path: Path) -> None:
    torch.save({"model": state_of(small_model())}, tmp_path / "c.pt")
    with pytest.raises(ArtifactError, match="has no entry collect.state_dict_key='state_dict' \\(it holds model\\)"):
        read_state_dict(tmp_path / "c.pt", "collect.from", "state_dict")
    with pytest.raises(ConfigError, match="matches no file or folder"):
        find(str(tmp_path / "nothing_*.pt"), "collect.from")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ConfigError, match="notes.txt, which is no checkpoint pdiff reads"):
        find(str(tmp_path / "*"), "collect.from")
    with pytest.raises(ConfigError, match="collect.base='nowhere.pt' does not exist"):
        find_one("nowhere.pt", "collect.base")


def test_checkpoints_from_makes_a_checkpoint_set_in_the_library(tmp_path: Path) -> None:
    import pdiff

    model = small_model()
    spec = ParamSpec.select(model, "2.*")
    for i in (10, 9):
        state = state_of(model)
        state["2.bias"] += i
        save_file(state, str(tmp_path / f"epoch{i}.safetensors"))
    ckpts = pdiff.checkpoints_from(str(tmp_path / "epoch*.safetensors"), model, spec)
    assert ckpts.spec == spec and torch.equal(ckpts.params[:, -2:], model.state_dict()["2.bias"] + torch.tensor(
        [[9.0], [10.0]]))
