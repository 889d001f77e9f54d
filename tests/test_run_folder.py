"""open_run: a finished run read lazily, checked against its config.yaml, on a machine unlike the one that made it;
runs of an earlier pdiff (generator/ instead of train/, results.json without format_version) still read."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from pdiff.collect import load as load_collected
from pdiff.errors import ArtifactError
from pdiff.pipeline import Run
from pdiff.presets import load_config
from pdiff.run_folder import open_run
from pdiff.task import Task
from tests.conftest import tiny_config


@pytest.fixture
def moved_run(tiny_run: Path, tmp_path: Path) -> Path:
    """The tiny run as a CPU machine sees it after a GPU machine made it: device=cuda, the data elsewhere."""
    root = shutil.copytree(tiny_run, tmp_path / "mnist1d-convnet")
    text = (root / "config.yaml").read_text()
    text = text.replace("device: auto", "device: cuda:7").replace("data_dir:", "data_dir: /nowhere/at/all #")
    (root / "config.yaml").write_text(text)
    return root


def test_a_run_made_elsewhere_is_read_without_its_device_or_data(moved_run: Path, tiny_run: Path) -> None:
    run = open_run(moved_run)
    assert run.config.device == "cuda:7" and str(run.config.data.data_dir).startswith("/nowhere")
    collected = load_collected(Task(tiny_config(), progress=False), tiny_run)
    x = torch.randn(5, 1, 40)
    assert torch.equal(run.base_model(x), collected.model(x))  # built from base.safetensors' own record
    assert torch.equal(run.checkpoints.params, collected.checkpoints.params)
    assert run.generator.spec == run.checkpoints.spec and run.generated.params.shape == (6, 128)
    assert run.results["format_version"] == 1 and run.results["summary"]["generated"]["count"] == 6


def test_parts_are_checked_against_the_config_when_read(moved_run: Path) -> None:
    text = (moved_run / "config.yaml").read_text().replace("seed: 0", "seed: 5", 1)
    (moved_run / "config.yaml").write_text(text)
    run = open_run(moved_run)  # nothing is read yet
    with pytest.raises(ArtifactError, match="made under another config"):
        _ = run.base_model
    with pytest.raises(ArtifactError, match="rerun `pdiff train --force`"):
        _ = run.generator


def test_results_of_a_newer_pdiff_are_refused_and_older_ones_read(moved_run: Path) -> None:
    path = moved_run / "evaluate" / "results.json"
    results = json.loads(path.read_text())
    path.write_text(json.dumps({**results, "format_version": 2}))
    with pytest.raises(ArtifactError, match="format_version 2, written by a newer pdiff .* reads up to 1"):
        _ = open_run(moved_run).results
    path.write_text(json.dumps({k: v for k, v in results.items() if k != "format_version"}))
    assert open_run(moved_run).results["summary"] == results["summary"]


def test_a_run_with_the_old_generator_folder_is_read_and_counts_as_trained(tiny_run: Path, tmp_path: Path) -> None:
    root = shutil.copytree(tiny_run, tmp_path / "mnist1d-convnet")
    (root / "train").rename(root / "generator")
    assert open_run(root).generator.spec == open_run(tiny_run).generator.spec
    config = load_config(root / "config.yaml")
    assert all(Run(config, root, progress=False).is_done(stage) for stage in ("train", "generate", "report"))
