"""Interruption (kill -9 in every stage, then resume), determinism, artifact integrity, no pickle, the lock."""

from __future__ import annotations

import copy
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from pdiff.config import STAGES, AutoencoderConfig
from pdiff.errors import TrainingError
from pdiff.generator import ParameterGenerator
from pdiff.params import ParamSpec
from pdiff.pipeline import STAGE_DIRS, run_pipeline
from pdiff.runlock import LOCK_FILE, run_lock
from pdiff.store import load_json, load_tensors
from tests.conftest import TINY, tiny_config

SRC = Path(__file__).resolve().parents[1] / "src"
TASK = "mnist1d-convnet"


@pytest.fixture(scope="module")
def reference(tiny_run: Path) -> Path:
    """An uninterrupted tiny run (in this process, one thread): the results every other run must match."""
    return tiny_run


def assert_same_results(a: Path, b: Path) -> None:
    """results.json byte for byte, and every tensor of every safetensors file bit for bit."""
    assert (a / "evaluate/results.json").read_bytes() == (b / "evaluate/results.json").read_bytes()
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*.safetensors"))
    assert files == sorted(str(p.relative_to(b)) for p in b.rglob("*.safetensors")) and len(files) == 6
    for name in files:
        x, y = load_file(a / name), load_file(b / name)
        assert x.keys() == y.keys(), name
        assert all(torch.equal(x[k], y[k]) for k in x), name


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
    forbidden = re.compile(r"\btorch\.(load|save)\(|\bimport (c?pickle|joblib|dill)\b|\bpickle\.\w|allow_pickle")
    offenders = [f"{path.relative_to(SRC)}:{n}" for path in sorted(SRC.rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if forbidden.search(line)]
    assert offenders == []


def test_nan_loss_restores_the_last_good_weights_and_names_the_step() -> None:
    net = nn.Linear(4, 4)
    gen = ParameterGenerator(ParamSpec(("w",), ((4,),)), device="cpu")
    good: dict[str, torch.Tensor] = {}
    calls = []

    def loss_fn(module: nn.Module, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        calls.append(1)
        loss = (module(batch) - batch).pow(2).mean()
        return loss * float("nan") if len(calls) == 151 else loss  # step 150 diverges

    def on_step(module: nn.Module) -> None:
        if len(calls) == 100:  # after step 99: the weights step 100 starts from
            good.update(copy.deepcopy(module.state_dict()))

    with pytest.raises(TrainingError, match=r"test loss became nan at step 150: lower train\.test\.lr "
                                            r"\(the weights of step 100"):
        gen._train(net, torch.randn(10, 4), loss_fn, AutoencoderConfig(steps=300, lr=1e-2), "test", False, on_step)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in good.items()) and good


def test_a_stale_lock_is_taken_over(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(f"{dead.pid}\n")  # left by a process killed with -9
    with run_lock(tmp_path) as lock:
        assert lock.read_text().strip() == str(os.getpid())
    assert not lock.exists()
