"""pdiff.hub offline: export a tiny run as a hub repository folder, load it back, sample from it, refuse what
cannot work without a network (an uncached repo id under HF_HUB_OFFLINE=1, a push without a network or token)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard
from safetensors.torch import load_file
from typer.testing import CliRunner

from pdiff import CheckpointSet, ParameterGenerator, share
from pdiff.cli import app
from pdiff.errors import ArtifactError, HubError
from pdiff.pipeline import stage_hash
from pdiff.presets import load_config
from pdiff.tasks.models import build_model
from tests.conftest import TINY, write_image_folder

runner = CliRunner()
SAMPLING = {"sampler": "ddim", "steps": 5, "seed": 7}


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory) -> Path:
    return share.export(tiny_run, tmp_path_factory.mktemp("export") / "generator")


@pytest.fixture
def no_hub(monkeypatch, tmp_path: Path) -> None:
    """An empty hub cache, no stored token, and a hub endpoint that refuses connections."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)


def one_line_error(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1, result.output
    return result.output


def test_export_is_a_hub_repo_whose_generator_samples_what_the_run_samples(tiny_run: Path, exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "autoencoder.safetensors", "base.safetensors",
                                                         "config.json", "config.yaml", "diffusion.safetensors"]
    config = json.loads((exported / "config.json").read_text())
    run_config = load_config(tiny_run / "config.yaml")
    assert config["library_name"] == "pdiff" and config["kind"] == "generator" and config["pdiff_version"]
    assert config["task"] == "mnist1d-convnet" and config["config_hash"] == stage_hash(run_config, "train")
    assert config["train"]["autoencoder"]["latent_dim"] == 8 and config["base"]["model"] == run_config.model.name
    assert config["base"]["classes"] == [str(d) for d in range(10)] and config["base"]["normalisation"] is None
    assert config["base"]["input_shape"] == [1, 40]

    from_run = ParameterGenerator.load(tiny_run / "train")
    from_hub = ParameterGenerator.from_pretrained(exported)
    assert from_hub.spec == from_run.spec and config["spec"] == from_run.spec.to_dict()
    assert torch.equal(from_hub.sample(3, **SAMPLING), from_run.sample(3, **SAMPLING))
    assert not torch.equal(from_hub.sample(3, **{**SAMPLING, "seed": 8}), from_run.sample(3, **SAMPLING))


def test_the_model_card_has_pdiff_metadata_results_and_the_command_that_made_it(tiny_run: Path,
                                                                                exported: Path) -> None:
    card = ModelCard.load(exported / "README.md")
    assert card.data.library_name == "pdiff" and card.data.datasets == ["mnist1d"] and "pdiff" in card.data.tags
    assert "| generated | 6 |" in card.text and "mean - original [95% CI]" in card.text
    assert "pdiff run config.yaml    # the resolved config in this folder" in card.text
    assert "pdiff run mnist1d-convnet data.val_size=200" in card.text and " collect.k=12 " in card.text
    assert 'ParameterGenerator.from_pretrained("USER/REPO")' in card.text
    assert "Inputs: shape [1, 40]; normalisation: none" in card.text and "`0`, `1`, `2`" in card.text
    config = load_config(tiny_run / "config.yaml")
    task, *overrides = share.run_arguments(config)  # both of the card's commands reproduce the run's config exactly
    assert stage_hash(load_config(task, overrides), "report") == stage_hash(config, "report")
    assert stage_hash(load_config(exported / "config.yaml"), "report") == stage_hash(config, "report")
    assert share.run_arguments(load_config("mnist1d-convnet")) == ["mnist1d-convnet"]


def test_pdiff_sample_on_an_export_writes_the_runs_loadable_state_dicts(tiny_run: Path, exported: Path,
                                                                       tmp_path: Path) -> None:
    args = ["-n", "2", "--sampler", "ddim", "--steps", "5", "--seed", "3"]
    assert runner.invoke(app, ["sample", str(exported), "--out", str(tmp_path / "hub"), *args]).exit_code == 0
    assert runner.invoke(app, ["sample", str(tiny_run), "--out", str(tmp_path / "run"), *args]).exit_code == 0
    base = json.loads((exported / "config.json").read_text())["base"]
    for name in ("model_000.safetensors", "model_001.safetensors"):
        state, from_run = load_file(tmp_path / "hub" / name), load_file(tmp_path / "run" / name)
        assert state.keys() == from_run.keys() and all(torch.equal(state[k], from_run[k]) for k in state)
        model = build_model(base["model"], base["input_shape"], base["num_classes"], **base["model_kwargs"])
        model.load_state_dict(state)  # strict: every parameter and buffer is there


def test_a_checkpoint_set_round_trips_as_a_dataset_repo(tiny_run: Path, tmp_path: Path) -> None:
    ckpts, _ = CheckpointSet.load(tiny_run / "collect" / "checkpoints.safetensors")
    back = CheckpointSet.from_pretrained(ckpts.save_pretrained(tmp_path / "lib"))
    assert back.spec == ckpts.spec
    for name in ("params", "val_accuracy", "test_accuracy", "test_predictions"):
        assert torch.equal(getattr(back, name), getattr(ckpts, name))
    assert runner.invoke(app, ["export", str(tiny_run), str(tmp_path / "cli"), "--checkpoints"]).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == ["README.md", "base.safetensors",
                                                                   "checkpoints.safetensors", "config.json",
                                                                   "config.yaml"]
    assert torch.equal(CheckpointSet.from_pretrained(tmp_path / "cli").params, ckpts.params)
    card = DatasetCard.load(tmp_path / "cli" / "README.md")
    assert "model-checkpoints" in card.data.tags and "K = 12 checkpoints" in card.text
    with pytest.raises(ArtifactError, match="no pdiff generator export"):
        ParameterGenerator.from_pretrained(tmp_path / "cli")  # a dataset export is no model export


def test_an_uncached_repo_id_offline_is_one_line_error(no_hub, monkeypatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError, match="not in the local cache while HF_HUB_OFFLINE=1 forbids downloading it"):
        ParameterGenerator.from_pretrained("someone/uncached-generator")
    output = one_line_error(["sample", "someone/uncached-generator"])
    assert "HF_HUB_OFFLINE=1" in output


def test_hf_hub_offline_set_in_the_environment_reaches_pdiff_sample(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(Path("src"))}
    result = subprocess.run([sys.executable, "-m", "pdiff", "sample", "someone/uncached-generator"], env=env,
                            capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1])
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "is not in the local cache while HF_HUB_OFFLINE=1" in result.stderr


def test_a_repo_id_that_the_hub_cannot_serve_is_one_line_error(no_hub) -> None:
    with pytest.raises(HubError, match="the hub cannot be reached"):
        ParameterGenerator.from_pretrained("someone/uncached-generator")


def test_push_without_token_or_network_is_one_line_error(tiny_run: Path, no_hub, monkeypatch) -> None:
    assert "no Hugging Face token" in one_line_error(["push", str(tiny_run), "someone/generator"])
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    assert "uploading to the hub failed (ConnectError" in one_line_error(["push", str(tiny_run), "someone/generator"])
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE=1 forbids uploading" in one_line_error(["push", str(tiny_run), "someone/generator"])
    assert "write it as user/name" in one_line_error(["push", str(tiny_run), "not a repo"])


def test_export_refuses_a_foreign_folder_and_replaces_an_earlier_export(tiny_run: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "holds no pdiff export" in one_line_error(["export", str(tiny_run), str(foreign)])
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    out = tmp_path / "out"
    assert runner.invoke(app, ["export", str(tiny_run), str(out), "--no-base"]).exit_code == 0
    assert not (out / "base.safetensors").exists() and "base" not in json.loads((out / "config.json").read_text())
    assert "exported without its base model" in one_line_error(["sample", str(out), "--out", str(tmp_path / "s")])
    assert "pass --force to replace it" in one_line_error(["export", str(tiny_run), str(out)])
    assert runner.invoke(app, ["export", str(tiny_run), str(out), "--force"]).exit_code == 0
    assert (out / "base.safetensors").is_file() and not list(tmp_path.glob(".out.*"))


def test_an_image_folder_run_made_with_a_relative_data_dir_samples_and_exports_from_elsewhere(
        tmp_path: Path, monkeypatch) -> None:
    """The run records the folder's absolute path, so sampling and exporting from another directory neither fail
    nor send the user to rerun collect; the export names the classes and the normalisation its models expect."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "project").mkdir()
    write_image_folder(tmp_path / "project" / "photos", {"train": {"cat": 6, "dog": 6}, "test": {"cat": 2, "dog": 2}})
    monkeypatch.chdir(tmp_path / "project")
    made = runner.invoke(app, ["run", *TINY, "task=photos", "data.name=imagefolder", "--data-dir", "photos",
                               "data.val_size=0.25", "model.name=convnet3", "model.kwargs={channels: [4, 4, 4]}",
                               "collect.k=3", "--runs-dir", "runs", "-q"])
    assert made.exit_code == 0, made.output
    run = tmp_path / "project" / "runs" / "photos"
    monkeypatch.chdir(tmp_path)
    sampled = runner.invoke(app, ["sample", str(run), "-n", "2", "--out", "samples", "--sampler", "ddim",
                                  "--steps", "5"])
    assert sampled.exit_code == 0 and "collect --force" not in sampled.output, sampled.output
    exported = runner.invoke(app, ["export", str(run), "export"])
    assert exported.exit_code == 0, exported.output
    base = json.loads((tmp_path / "export" / "config.json").read_text())["base"]
    assert base["classes"] == ["cat", "dog"] and base["input_shape"][0] == 3
    assert len(base["normalisation"]["mean"]) == len(base["normalisation"]["std"]) == 3
    card = (tmp_path / "export" / "README.md").read_text()
    assert "Classes, in label order: `cat`, `dog`." in card and "pixels divided by 255" in card
    assert "pdiff run config.yaml --data-dir DATA" in card and "data_dir: null" in (tmp_path / "export" /
                                                                                  "config.yaml").read_text()
