import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import pdiff
from pdiff.cli import app
from tests.conftest import TINY, write_checkpoints

runner = CliRunner(env={"COLUMNS": "200"})


def test_tasks_lists_the_presets() -> None:
    result = runner.invoke(app, ["tasks"])
    assert result.exit_code == 0
    for name in ["mnist1d-convnet", "mnist1d-mlp", "mnist-convnet3"]:
        assert name in result.output


def test_keys_lists_config_keys() -> None:
    result = runner.invoke(app, ["tasks", "--keys"])
    assert "train.diffusion.steps" in result.output.split()
    assert ("generate.sampler (str; default ddpm; one of ddpm, ddim, dpm, euler, midpoint)\n    ddpm (the paper's)"
            in result.output)


def test_show_prints_the_resolved_config_with_types_defaults_ranges_and_help() -> None:
    result = runner.invoke(app, ["show", "mnist1d-convnet", "data.val_size=0.1"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    entry = lines.index("data.val_size: 0.1 (int | float; default 1000; > 0; a count, or a fraction < 1)")
    assert lines[entry + 1].startswith("    held out of the training data")
    assert "collect.k: 200 (int; default 200; > 0)" in lines
    assert "task: mnist1d-convnet (str; default custom)" in lines


def test_show_refuses_a_bad_override_in_one_line() -> None:
    result = runner.invoke(app, ["show", "data.val_size=1.5"])
    assert result.exit_code == 1 and "data.val_size=1.5 is neither a count nor a fraction" in result.output


@pytest.mark.parametrize("args, message", [
    (["run", "collect.kk=3"], "unknown config key 'collect.kk'"),
    (["run", "no-such-task"], "unknown task"),
    (["collect", "collect.subset=[nothing.*]"], "matches no parameter"),
    (["train"], "needs 'collect' first"),
    (["run", "generate.target=max"], "generate.target=max needs a generator conditioned on accuracy"),
])
def test_user_errors_are_one_line(tmp_path, args, message) -> None:
    result = runner.invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.rglob("*.safetensors"))


def test_missing_dataset_exit_code(tmp_path) -> None:
    result = runner.invoke(app, ["collect", "mnist-convnet3", "data.download=false", "--data-dir", str(tmp_path),
                                 "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 1 and f"MNIST is not in {tmp_path}" in result.output


def test_run_and_sample(tmp_path) -> None:
    result = runner.invoke(app, ["run", *TINY, "--runs-dir", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    assert "generated" in result.output and "report.html" in result.output
    out = tmp_path / "samples"
    result = runner.invoke(app, ["sample", str(tmp_path / "mnist1d-convnet"), "-n", "2", "--out", str(out),
                                 "--sampler", "ddim", "--steps", "5"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["model_000.safetensors", "model_001.safetensors", "samples.json"]


def test_sample_a_target_from_an_unconditioned_generator_is_one_line(tiny_run, tmp_path) -> None:
    result = runner.invoke(app, ["sample", str(tiny_run), "--target", "max", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--target=max: this generator was trained without a condition" in result.output


def test_run_on_your_checkpoints_with_another_runs_held_out(tiny_run, tmp_path) -> None:
    """`python -m pdiff run` on checkpoint files, with those of another run of the training held out."""
    write_checkpoints(tiny_run, tmp_path / "mine", {f"ckpt_{i}": i for i in range(8)}, "pt")
    write_checkpoints(tiny_run, tmp_path / "other", {f"ckpt_{i}": i for i in range(8, 12)}, "folder")
    env = {**os.environ, "PYTHONPATH": str(Path(pdiff.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pdiff", "run", *TINY, f"collect.from={tmp_path}/mine/*.pt",
                             f"train.holdout_from={tmp_path}/other/ckpt_*", "--runs-dir", str(tmp_path / "runs"),
                             "-q"], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "runs" / "mnist1d-convnet" / "evaluate" / "results.json").read_text())
    tiny = json.loads((tiny_run / "evaluate" / "results.json").read_text())

    def accuracies(data: dict, group: str) -> list[float]:
        return [m["test_accuracy"] for m in data["models"] if m["group"] == group]

    assert accuracies(results, "original") == accuracies(tiny, "original")[:8]
    assert accuracies(results, "heldout") == accuracies(tiny, "original")[8:]  # measured as collected ones are
    assert "generalization" in results
