"""Interruption (kill -9 in every stage, then resume), determinism, artifact integrity, no pickle, the lock;
file modes, full disks, stale samples, literal paths, foreign float types and library misuse."""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from pdiff import store
from pdiff.cli import app
from pdiff.config import STAGES, AutoencoderConfig
from pdiff.errors import DatasetError, NotFittedError, TrainingError
from pdiff.fitting import fit_network
from pdiff.generator import ParameterGenerator
from pdiff.inference import predict_many
from pdiff.params import ParamSpec
from pdiff.pipeline import STAGE_DIRS, run_pipeline
from pdiff.runlock import LOCK_FILE, run_lock
from pdiff.store import current_umask, load_json, load_tensors
from pdiff.tasks.datasets import Split, TensorLoader
from tests.conftest import TINY, tiny_config

SRC = Path(__file__).resolve().parents[1] / "src"
TASK = "mnist1d-convnet"


@pytest.fixture(scope="module")
def reference(tiny_run: Path) -> Path:
    """An uninterrupted tiny run (one thread, made once per machine): the results every other run must match."""
    return tiny_run


def assert_same_results(a: Path, b: Path) -> None:
    """results.json byte for byte but its provenance (the commit the shared run was made at may be an earlier one
    with the same source), and every tensor of every safetensors file bit for bit."""
    first, second = ((run / "evaluate/results.json").read_text() for run in (a, b))
    assert first.split('"provenance"')[0] == second.split('"provenance"')[0]  # provenance is the last key
    assert json.loads(first)["provenance"]["threads"] == json.loads(second)["provenance"]["threads"]
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.safetensors"))
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*.safetensors")) and len(files) == 6
    for name in files:
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys(), name
        assert all(torch.equal(x[k], y[k]) for k in x), name


@pytest.mark.slow
def test_same_seed_gives_bit_identical_results(reference: Path, tmp_path) -> None:
    again = run_pipeline(tiny_config(), tmp_path, progress=False).root
    assert_same_results(reference, again)
    assert "seed: 0" in (again / "config.yaml").read_text()
    assert "Seed 0" in (again / "report/report.md").read_text()
    assert load_json(again / "evaluate/results.json")["seed"] == 0


def _pdiff_run(runs: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pdiff", "run", *TINY, "--runs-dir", str(runs), "-q"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)


def _finished_markers(root: Path) -> dict[str, tuple[bytes, int]]:
    """stage -> (stage.json bytes, mtime) of every finished stage."""
    markers = {}
    for stage in STAGES:
        path = root / STAGE_DIRS[stage] / "stage.json"
        if path.is_file():
            markers[stage] = (path.read_bytes(), path.stat().st_mtime_ns)
    return markers


@pytest.mark.slow
def test_kill_9_in_every_stage_then_resume_gives_the_same_results(reference: Path, tmp_path) -> None:
    root = tmp_path / TASK
    finished: dict[str, tuple[bytes, int]] = {}
    for stage in STAGES:
        process = _pdiff_run(tmp_path)
        for line in process.stderr:  # log lines "<stage>: running" / "<stage>: done in ..."
            if line.startswith(f"{stage}: running"):
                process.send_signal(signal.SIGKILL)
                break
        process.stderr.close()
        assert process.wait() == -signal.SIGKILL, f"the run ended before {stage} started"
        assert not (root / STAGE_DIRS[stage] / "stage.json").exists(), f"{stage} finished before the kill"
        markers = _finished_markers(root)
        assert {s: m for s, m in markers.items() if s in finished} == finished, "a finished stage was redone"
        assert list(markers) == list(STAGES[: STAGES.index(stage)])
        finished = markers

    process = _pdiff_run(tmp_path)
    log = process.stderr.read()
    assert process.wait() == 0, log
    assert re.findall(r"^(\w+): running", log, re.M) == ["report"]  # only the unfinished stage ran
    assert {s: m for s, m in _finished_markers(root).items() if s in finished} == finished
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial", ".old", LOCK_FILE))]
    assert_same_results(reference, root)


def test_every_artifact_records_its_config_hash_and_spec(reference: Path) -> None:
    spec = load_json(reference / "collect/stage.json")["names"]
    for path in sorted(reference.rglob("*.safetensors")):
        meta = load_tensors(path)[1]
        assert re.fullmatch(r"[0-9a-f]{16}", meta["config_hash"]), path
        assert meta["spec"]["names"] == spec, path
    results = load_json(reference / "evaluate/results.json")
    assert results["config_hash"] and results["spec"]["names"] == spec
    suffixes = {p.suffix for p in reference.rglob("*") if p.is_file()}
    assert suffixes <= {".safetensors", ".json", ".yaml", ".csv", ".md", ".html", ".png"}


def test_no_pickle_in_the_package() -> None:
    """pdiff pickles nothing and unpickles nothing; a user's .pt checkpoint is read with torch.load(weights_only=True),
    which builds tensors and plain containers only."""
    forbidden = re.compile(r"\btorch\.save\(|\btorch\.load\((?![^)]*weights_only=True)"
                           r"|\bimport (c?pickle|joblib|dill)\b|\bpickle\.\w|allow_pickle")
    offenders = [f"{path.relative_to(SRC)}:{n}" for path in sorted(SRC.rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if forbidden.search(line)]
    assert offenders == []


def test_nan_loss_restores_the_last_good_weights_and_names_the_step() -> None:
    net = nn.Linear(4, 4)
    good: dict[str, torch.Tensor] = {}
    calls = []

    def loss_fn(module: nn.Module, batch: torch.Tensor, generator: torch.Generator,
                token_ids: torch.Tensor | None) -> torch.Tensor:
        calls.append(1)
        loss = (module(batch) - batch).pow(2).mean()
        return loss * float("nan") if len(calls) == 151 else loss  # step 150 diverges

    def on_step(module: nn.Module) -> None:
        if len(calls) == 100:  # after step 99: the weights step 100 starts from
            good.update(copy.deepcopy(module.state_dict()))

    with pytest.raises(TrainingError, match=r"test loss became nan at step 150: lower train\.test\.lr "
                                            r"\(the weights of step 100"):
        fit_network(net, torch.randn(10, 4), loss_fn, AutoencoderConfig(steps=300, lr=1e-2), "test", seed=0,
                    metrics=[], progress=False, on_step=on_step)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in good.items()) and good


def test_a_stale_lock_is_taken_over(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(f"{dead.pid}\n")  # left by a process killed with -9
    with run_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()


# ---- the second round: permissions, faults, stale files, library misuse -------------------------
runner = CliRunner(env={"COLUMNS": "200"})


def _one_error_line(result) -> str:
    """The CLI's error line, checked to be the only one, the last one, and no traceback."""
    output = result.output.strip()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), output
    assert "Traceback" not in output and output.count("error:") == 1, output
    error = output[output.rfind("error:"):]
    assert "\n" not in error, output
    return error


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_artifact_honours_the_umask(reference: Path) -> None:
    """Written as open() would write them: a colleague or a web server may read what the umask allows."""
    expected = 0o666 & ~current_umask()
    modes = {str(p.relative_to(reference)): stat.S_IMODE(p.stat().st_mode) for p in reference.rglob("*") if p.is_file()}
    assert modes and all(mode == expected for mode in modes.values()), modes


def test_a_failed_stage_leaves_config_yaml_describing_what_is_on_disk(reference: Path, tmp_path) -> None:
    shutil.copytree(reference, tmp_path / TASK)
    before = (tmp_path / TASK / "config.yaml").read_bytes()
    result = runner.invoke(app, ["run", *TINY, "train.autoencoder.lr=1e30", "--force", "train", "--runs-dir",
                                 str(tmp_path), "-q"])
    assert "autoencoder loss became" in _one_error_line(result)
    assert (tmp_path / TASK / "config.yaml").read_bytes() == before  # still the config of the finished stages
    result = runner.invoke(app, ["generate", *TINY, "generate.n=5", "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output  # a stage that succeeds under a new config rewrites it
    assert yaml.safe_load((tmp_path / TASK / "config.yaml").read_text())["generate"]["n"] == 5


@pytest.fixture
def full_disk(monkeypatch) -> None:
    """Every artifact write fails as on a full disk, after writing part of its bytes."""
    real_text, real_bytes = Path.write_text, Path.write_bytes

    def fail(path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    def save_file(tensors, filename, metadata=None) -> None:  # as safetensors fails on a full disk
        real_bytes(Path(filename), b"\0" * 64)
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    def write(real):
        def write(self: Path, data, *args, **kwargs):
            if self.name.endswith(".tmp"):  # pdiff.store's temporary files
                real(self, data[: len(data) // 2], *args, **kwargs)
                fail(self)
            return real(self, data, *args, **kwargs)
        return write

    monkeypatch.setattr(store, "save_file", save_file)
    monkeypatch.setattr(Path, "write_text", write(real_text))
    monkeypatch.setattr(Path, "write_bytes", write(real_bytes))


@pytest.mark.parametrize("stage", STAGES)
def test_a_full_disk_in_any_stage_is_one_line_and_leaves_the_run_as_it_was(stage, reference: Path, tmp_path,
                                                                            full_disk, monkeypatch) -> None:
    shutil.copytree(reference, tmp_path / TASK)
    before = _snapshot(tmp_path)
    result = runner.invoke(app, [stage, *TINY, "--force", "--runs-dir", str(tmp_path), "-q"])
    error = _one_error_line(result)
    assert "no space left on the device" in error and "it needs about" in error and "free some space" in error
    assert _snapshot(tmp_path) == before  # nothing partial: no temporary file, stage folder or lock
    if stage == "generate":  # once there is space again, the same command succeeds
        monkeypatch.undo()
        result = runner.invoke(app, [stage, *TINY, "--force", "--runs-dir", str(tmp_path), "-q"])
        assert result.exit_code == 0, result.output
        assert not [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".partial", LOCK_FILE))]


def test_a_full_disk_at_lock_time_leaves_no_lock_file(tmp_path, monkeypatch) -> None:
    real = Path.write_text

    def write_text(self: Path, data, *args, **kwargs):
        if self.name.startswith(f"{LOCK_FILE}."):
            real(self, "")  # created, but nothing fits in it
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    result = runner.invoke(app, ["run", *TINY, "--runs-dir", str(tmp_path), "-q"])
    assert "no space left on the device" in _one_error_line(result)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_full_tmpfs_under_sample_is_one_line(reference: Path, tmp_path) -> None:
    """A real full disk: `pdiff sample` into a 256 KiB tmpfs (only where this test may mount one)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'mount failed'}); "
                    "test_a_full_disk_in_any_stage covers a full disk by failing the writes")
    try:
        result = runner.invoke(app, ["sample", str(reference), "-n", "100", "--out", str(mount / "out"),
                                     "--sampler", "ddim", "--steps", "2"])
        assert "no space left on the device" in _one_error_line(result)
        assert [p for p in mount.rglob("*") if p.is_file()] == []
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_sample_refuses_a_full_out_and_force_replaces_its_models(reference: Path, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["sample", str(reference), "--out", str(out), "--sampler", "ddim", "--steps", "2"]
    assert runner.invoke(app, [*args, "-n", "3"]).exit_code == 0
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    assert "pass --force" in _one_error_line(runner.invoke(app, [*args, "-n", "2", "--seed", "1"]))
    assert _snapshot(out) == before
    result = runner.invoke(app, [*args, "-n", "2", "--seed", "1", "--force"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model_000.safetensors", "model_001.safetensors", "notes.txt",
                                                     "samples.json"]
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "model_000.safetensors").read_bytes() != before["model_000.safetensors"]  # the new seed's
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no partial folder beside it


@pytest.mark.parametrize("folder", ["exp[lr=0.1]", "[/x]", "[bold]runs"])
def test_paths_are_printed_literally(folder: str, reference: Path, tmp_path) -> None:
    runs = tmp_path / folder
    shutil.copytree(reference, runs / TASK)
    result = runner.invoke(app, ["report", *TINY, "--runs-dir", str(runs), "-q"])
    assert result.exit_code == 0, result.output
    assert f"report: {runs / TASK / 'report' / 'report.html'}" in result.output
    result = runner.invoke(app, ["sample", str(runs / TASK), "-n", "1", "--out", str(runs / "samples"),
                                 "--sampler", "ddim", "--steps", "2"])
    assert result.exit_code == 0, result.output
    assert f"wrote 1 state_dicts to {runs / 'samples'}/" in result.output


def test_checkpoints_of_other_float_types_load_as_float32(reference: Path, tmp_path) -> None:
    """float16 / bfloat16 / float64 files (saved by other tools) are read as float32 by every stage."""
    root = shutil.copytree(reference, tmp_path / TASK)
    for path, dtype in [("collect/base.safetensors", torch.float16), ("collect/checkpoints.safetensors", torch.float64),
                        ("train/autoencoder.safetensors", torch.bfloat16),
                        ("train/diffusion.safetensors", torch.float64)]:
        tensors, meta = load_tensors(root / path)
        store.save_tensors(root / path, {k: v.to(dtype) if v.is_floating_point() else v
                                         for k, v in tensors.items()}, meta)
    result = runner.invoke(app, ["generate", *TINY, "--force", "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert load_tensors(root / "generate/generated.safetensors")[0]["params"].dtype == torch.float32


def test_library_misuse_is_a_clear_error() -> None:
    spec = ParamSpec(("w",), ((4,),))
    gen = ParameterGenerator(spec, device="cpu")
    with pytest.raises(NotFittedError, match=r"never trained: call fit\(checkpoints\)"):
        gen.sample(2)
    bad = torch.randn(5, 4)
    bad[3, 1] = float("nan")
    with pytest.raises(TrainingError, match="checkpoint 3 .* holds NaN or Inf values, so training cannot start"):
        gen.fit(bad, progress=False)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    empty = TensorLoader(Split(torch.empty(0, 3), torch.empty(0, dtype=torch.int64)), batch_size=8)
    with pytest.raises(DatasetError, match="the loader yielded no batches"):
        predict_many(model, ParamSpec.select(model, ["1.*"]), torch.zeros(2, 8), empty)
