"""`pdiff export` and `save_pretrained` never delete or overwrite what pdiff did not write: a model folder of
another library, a project root, a user's README and config.json, an export of the other kind; an export replaced
with --force is swapped whole (a kill leaves the old one); an export from a newer pdiff is refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pdiff import CheckpointSet, ParameterGenerator
from pdiff.cli import app
from pdiff.errors import ArtifactError
from tests.test_sample import KILLED_CLI, SRC, one_line_error, snapshot

runner = CliRunner()


def test_a_model_folder_of_another_library_is_never_replaced(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bert"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "bert", "hidden_size": 768}')
    (out / "model.safetensors").write_bytes(os.urandom(256))
    (out / "notes.md").write_text("fine-tuned for a week")
    before = snapshot(out)
    for args in ([], ["--force"], ["--checkpoints", "--force"]):
        assert "holds no pdiff export" in one_line_error(["export", str(tiny_run), str(out), *args])
        assert snapshot(out) == before


def test_a_project_root_holding_the_run_is_never_replaced(tiny_run: Path, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "runs").mkdir(parents=True)
    run = project / "runs" / "mnist1d-convnet"
    os.symlink(tiny_run, run)
    (project / "config.json").write_text("{}")
    (project / "train.py").write_text("print('my code')")
    before = snapshot(project)
    assert "is not empty and holds no pdiff export" in one_line_error(["export", str(run), str(project), "--force"])
    assert snapshot(project) == before and run.is_symlink()


def test_save_pretrained_keeps_a_users_readme_and_config(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "folder"
    out.mkdir()
    (out / "README.md").write_text("# my project")
    (out / "config.json").write_text('{"lr": 0.1}')
    before = snapshot(out)
    gen = ParameterGenerator.load(tiny_run / "train")
    for force in (False, True):
        with pytest.raises(ArtifactError, match="holds no pdiff export of a generator"):
            gen.save_pretrained(out, force=force)
        assert snapshot(out) == before
    ckpts, _ = CheckpointSet.load(tiny_run / "collect" / "checkpoints.safetensors")
    exported = ckpts.save_pretrained(tmp_path / "ckpts")
    first = snapshot(exported)
    with pytest.raises(ArtifactError, match="holds no pdiff export of a generator"):
        gen.save_pretrained(exported, force=True)  # a checkpoints export is no generator export
    assert snapshot(exported) == first


def test_a_killed_export_leaves_the_earlier_export(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["export", str(tiny_run), str(out), "--no-base"]).exit_code == 0
    before = snapshot(out)
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    killed = subprocess.run([sys.executable, "-c", KILLED_CLI, "swap", "export", str(tiny_run), str(out), "--force"],
                            env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert snapshot(out) == before
    assert runner.invoke(app, ["export", str(tiny_run), str(out), "--force"]).exit_code == 0
    assert (out / "base.safetensors").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_export_of_a_newer_pdiff_is_one_line(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert runner.invoke(app, ["export", str(tiny_run), str(out)]).exit_code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["format_version"] == 1 and "README.md" in config["files"]
    (out / "config.json").write_text(json.dumps({**config, "format_version": 2, "a_later_key": 1}))
    error = one_line_error(["sample", str(out), "--out", str(tmp_path / "s")])
    assert "format_version 2, written by a newer pdiff" in error and "upgrade pdiff" in error
