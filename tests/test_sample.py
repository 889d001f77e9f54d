"""`pdiff sample` never loses what is in --out: a folder it did not write is refused even with --force, a second
sampler on the same folder is refused, and a kill at any point leaves the old samples or the new ones. A run that
generates LoRA adapters writes PEFT adapter folders that PEFT loads into the models pdiff evaluates."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
from typer.testing import CliRunner

from pdiff.cli import app
from pdiff.inference import predict, predict_many
from pdiff.run_folder import open_run
from pdiff.sample import sample_models
from pdiff.share import export
from pdiff.store import load_tensors
from pdiff.task import Task
from pdiff.tasks.models import build_model

SRC = Path(__file__).resolve().parents[1] / "src"
runner = CliRunner()
ARGS = ["--sampler", "ddim", "--steps", "2"]

# `pdiff ARGS...` with a SIGKILL injected at one step of the folder's replacement.
KILLED_CLI = """
import os, signal, sys
import pdiff.folders as folders
import pdiff.store as store
point = sys.argv.pop(1)

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

if point == "writing":  # the second model file half way
    real, calls = store.save_file, []
    def save_file(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            die()
        return real(*args, **kwargs)
    store.save_file = save_file
elif point == "swap":
    folders._swap = die
from pdiff.cli import app
app(prog_name="pdiff")
"""


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_a_folder_of_the_users_is_refused_even_with_force(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "model_000.safetensors").write_bytes(os.urandom(100))  # looks like ours, is not
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(out)
    for force in ([], ["--force"]):
        error = one_line_error(["sample", str(tiny_run), "--out", str(out), *ARGS, *force])
        assert "holds no `pdiff sample` output" in error and "give a new or empty folder" in error
        assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_a_second_sampler_on_the_same_folder_is_refused(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["sample", str(tiny_run), "--out", str(out), "-n", "2", *ARGS]).exit_code == 0
    before = snapshot(out)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".out.lock").write_text(f"{other.pid}\n")  # a pdiff sample writing into `out` right now
        error = one_line_error(["sample", str(tiny_run), "--out", str(out), "-n", "3", "--force", *ARGS])
        assert f"{out} is in use by another pdiff process (pid {other.pid})" in error
        assert snapshot(out) == before
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize("point", ["writing", "swap"])
def test_a_killed_sample_leaves_the_old_samples_and_the_users_files(point: str, tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["sample", str(tiny_run), "--out", str(out), "-n", "2", *ARGS]).exit_code == 0
    (out / "notes.txt").write_text("which seed was best")
    before = snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_CLI, point, "sample", str(tiny_run), "--out", str(out),
                             "-n", "3", "--seed", "1", "--force", *ARGS], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert snapshot(out) == before  # the old samples, complete, and the notes byte for byte
    result = runner.invoke(app, ["sample", str(tiny_run), "--out", str(out), "-n", "3", "--seed", "1", "--force",
                                 *ARGS])
    assert result.exit_code == 0, result.output
    assert sorted(snapshot(out)) == ["model_000.safetensors", "model_001.safetensors", "model_002.safetensors",
                                     "notes.txt", "samples.json"]
    assert snapshot(out)["notes.txt"] == before["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_peft_adapter_folders_load_with_peft_and_predict_as_pdiff_does(tiny_adapter_run: Path, tmp_path: Path
                                                                        ) -> None:
    out = tmp_path / "adapters"
    paths = sample_models(tiny_adapter_run, 2, out, seed=5, sampler="ddim", steps=10, format="peft")
    assert paths == [out / "model_000", out / "model_001"]
    assert sorted(p.name for p in paths[1].iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    tensors, meta = load_tensors(out / "base.safetensors")
    base = build_model(meta["model"], meta["input_shape"], meta["num_classes"], **meta["model_kwargs"])
    base.load_state_dict(tensors)
    loaded = peft.PeftModel.from_pretrained(base, paths[1])

    run = open_run(tiny_adapter_run)
    vectors = run.generator.sample(2, sampler="ddim", steps=10, seed=5)
    loader = Task(run.config, progress=False).loader("test")
    assert torch.equal(predict(loaded, loader), predict_many(run.base_model, run.checkpoints.spec, vectors, loader)[1])

    export(tiny_adapter_run, tmp_path / "export", base=True)  # an export samples the same adapters
    again = sample_models(tmp_path / "export", 2, tmp_path / "again", seed=5, sampler="ddim", steps=10, format="peft")
    weights = "adapter_model.safetensors"
    assert (again[1] / weights).read_bytes() == (paths[1] / weights).read_bytes()


def test_peft_format_of_a_run_without_adapters_is_refused_before_writing(tiny_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["sample", str(tiny_run), "--format", "peft", "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and "which" in result.output and "does not generate (its config has no model.peft)" \
        in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()
