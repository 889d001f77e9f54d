"""Ablation studies on the tiny config: each study's folder and table, reuse of the main run's work, errors."""

import copy
import importlib
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pdiff.ablation import Variant, ablate, distinct_labels, study_variants
from pdiff.cli import app
from pdiff.collect import collect
from pdiff.errors import ConfigError
from pdiff.hashing import base_hash
from pdiff.params import ParamSpec
from pdiff.pipeline import Run, run_pipeline, run_stage
from pdiff.tasks.datasets import TensorLoader, load_dataset
from pdiff.tasks.models import build_model
from tests.conftest import TINY, tiny_config


@pytest.fixture(scope="module")
def runs_dir(tiny_run, tmp_path_factory):
    """The studies' runs folder; its main run is a copy of the shared tiny run (the studies add to it)."""
    runs = tmp_path_factory.mktemp("ablation_runs")
    shutil.copytree(tiny_run, runs / tiny_run.name)
    return runs


def _study(runs_dir, study: str, values: list[str] | None) -> tuple[dict, dict]:
    report = ablate(tiny_config(), study, values, runs_dir, progress=False)
    assert {"report.md", "report.html", "accuracy.png", "max_similarity.png", "accuracy_vs_similarity.png",
            "ablation.json"} <= {p.name for p in report.parent.iterdir()}
    assert "data:image/png;base64," in report.with_suffix(".html").read_text()
    rows = json.loads((report.parent / "ablation.json").read_text())["variants"]
    return {r["label"]: r for r in rows}, {"report": report.read_text(), "dir": report.parent}


@pytest.mark.parametrize("recipe", ["epoch", "iteration"])
def test_fewer_checkpoints_are_a_prefix_of_more(recipe) -> None:
    """Why the K study may slice one collection: collect(k=5) saves the first 5 of collect(k=12)."""
    data = load_dataset("mnist1d", num_samples=600, val_size=100)
    model = build_model("convnet1d", data.input_shape, data.num_classes)
    spec = ParamSpec.select(model, "last_norm:2")

    def run(k: int) -> torch.Tensor:
        loader = TensorLoader(data.train, 128, shuffle=True, generator=torch.Generator().manual_seed(0))
        return collect(copy.deepcopy(model), loader, spec, k, recipe, lr=0.01, progress=False).params

    assert torch.equal(run(5), run(12)[:5])


def test_base_hash_follows_base_training_only() -> None:
    assert base_hash(tiny_config()) == base_hash(tiny_config("collect.k=3", "collect.subset=[features.0.1.*]"))
    assert base_hash(tiny_config()) != base_hash(tiny_config("collect.epochs=3"))


def test_collect_reuses_a_matching_base_model(tmp_path, monkeypatch) -> None:
    """A collect folder holding a base with the same base_hash skips base training and collects as a fresh run."""
    config = tiny_config("collect.subset=[features.0.1.*]", "collect.k=4")
    fresh = run_pipeline(config, tmp_path / "fresh", stages=("collect",), progress=False)
    reused = Run(config, tmp_path / "reused", progress=False)
    reused.stage_dir("collect").mkdir(parents=True)
    os.link(fresh.stage_dir("collect") / "base.safetensors", reused.stage_dir("collect") / "base.safetensors")
    collect_module = importlib.import_module("pdiff.collect")  # `pdiff.collect` is also the function's name
    monkeypatch.setattr(collect_module, "train_base", lambda *a, **k: pytest.fail("the base model was retrained"))
    run_stage(reused, "collect")
    a = load_file(fresh.stage_dir("collect") / "checkpoints.safetensors")
    b = load_file(reused.stage_dir("collect") / "checkpoints.safetensors")
    assert torch.equal(a["params"], b["params"]) and torch.equal(a["test_accuracy"], b["test_accuracy"])


def test_k_study_collects_once(runs_dir) -> None:
    rows, out = _study(runs_dir, "k", ["3", "12"])
    assert list(rows) == ["k3", "k12"]
    assert "collect" not in rows["k3"]["ran"] and "first 3 of the main run's 12" in rows["k3"]["reused"]["collect"]
    assert rows["k12"]["ran"] == []  # the main run itself
    main = load_file(runs_dir / "mnist1d-convnet/collect/checkpoints.safetensors")
    k3 = load_file(out["dir"] / "k3/collect/checkpoints.safetensors")
    assert torch.equal(k3["params"], main["params"][:3]) and torch.equal(k3["val_accuracy"], main["val_accuracy"][:3])
    assert rows["k3"]["summary"]["original"]["count"] == 3
    assert "| k3 |" in out["report"] and "| k12 |" in out["report"]
    assert [c["metric"] for c in rows["k3"]["versus_main"]] == ["mean_test_accuracy", "median_test_accuracy",
                                                                "best_val_chosen_test_accuracy"]
    assert rows["k12"]["versus_main"][0]["verdict"] == "no detectable difference"  # the main run against itself
    again, _ = _study(runs_dir, "k", ["3", "12"])  # a rerun computes nothing and still tells what was reused
    assert again["k3"]["ran"] == [] and again["k3"]["reused"] == rows["k3"]["reused"]


def test_steps_study_trains_once(runs_dir) -> None:
    rows, out = _study(runs_dir, "steps", ["ddim-5", "ddim-10"])
    assert rows["ddim-5"]["ran"] == ["generate", "evaluate", "report"]
    assert set(rows["ddim-5"]["reused"]) == {"collect", "train"}
    assert os.path.samefile(out["dir"] / "ddim-5/train/diffusion.safetensors",
                            runs_dir / "mnist1d-convnet/train/diffusion.safetensors")


def test_noise_study_switches_the_noise_off(runs_dir) -> None:
    rows, out = _study(runs_dir, "noise", ["none", "both"])
    assert rows["none"]["ran"] == ["train", "generate", "evaluate", "report"]
    shared = ablate(tiny_config(), "noise", ["none"], runs_dir, progress=False,
                    shared={"evaluate.baselines": []})  # the variant alone evaluates no baselines, nothing retrains
    row = json.loads((shared.parent / "ablation.json").read_text())["variants"][0]
    groups = {m["group"] for m in json.loads((out["dir"] / "none/evaluate/results.json").read_text())["models"]}
    main = json.loads((runs_dir / "mnist1d-convnet/evaluate/results.json").read_text())["models"]
    assert groups == {"original", "generated"} and "ensemble" in {m["group"] for m in main}
    assert row["ran"] == ["evaluate", "report"]
    assert rows["none"]["overrides"] == {"train.autoencoder.input_noise": 0.0, "train.autoencoder.latent_noise": 0.0}
    assert "collect" not in rows["none"]["ran"] and "train" in rows["none"]["ran"]
    assert rows["both"]["ran"] == []


def test_location_study_derives_norm_pairs(runs_dir) -> None:
    rows, out = _study(runs_dir, "location", None)
    assert list(rows) == ["norm1-2", "norm2-3"]
    assert rows["norm2-3"]["ran"] == []  # the config's own subset: the main run
    assert "base model" in rows["norm1-2"]["reused"]["collect"] and "collect" in rows["norm1-2"]["ran"]
    spec = json.loads((out["dir"] / "norm1-2/collect/stage.json").read_text())["names"]
    assert spec == ["features.0.1.weight", "features.0.1.bias", "features.1.1.weight", "features.1.1.bias"]


@pytest.mark.parametrize("study, values, message", [
    ("k", ["50"], "K=50 is not within the 12 checkpoints collected.*collect.k=50"),
    ("steps", ["ddim"], "write SAMPLER-STEPS"),
    ("noise", ["loud"], "choose from none, input, latent, both"),
    ("depth", None, "unknown study 'depth'"),
])
def test_bad_studies_fail_before_any_work(tmp_path, study, values, message) -> None:
    with pytest.raises(ConfigError, match=message):
        ablate(tiny_config(), study, values, tmp_path, progress=False)
    assert not list(tmp_path.iterdir())


def test_study_defaults_follow_the_paper() -> None:
    assert [v.label for v in study_variants(tiny_config("collect.k=60"), "k")] == ["k1", "k10", "k50", "k60"]
    assert [v.label for v in study_variants(tiny_config(), "noise")] == ["none", "input", "latent", "both"]
    steps = study_variants(tiny_config(), "steps")
    assert [v.label for v in steps] == ["ddpm-1000", "ddim-10", "ddim-20", "ddim-50", "ddim-100"]
    assert steps[0].overrides == {"generate.sampler": "ddpm", "generate.steps": None}


def test_cli_ablate(runs_dir) -> None:
    runner = CliRunner(env={"COLUMNS": "200"})
    result = runner.invoke(app, ["ablate", "mnist1d-convnet", *TINY, "--study", "steps", "ddim-5",
                                 "--runs-dir", str(runs_dir), "-q"])
    assert result.exit_code == 0, result.output
    assert "ddim-5" in result.output and "report.html" in result.output
    result = runner.invoke(app, ["ablate", *TINY, "--study", "k", "13", "--runs-dir", str(runs_dir)])
    assert result.exit_code == 1 and "collect more with collect.k=13" in result.output


def test_values_that_map_to_one_folder_get_labels_of_their_own() -> None:
    """Two values whose folder names are one ('a*b' and 'a?b' both read a_b) get labels told apart by a digest of
    their overrides, the same on every call, so neither overwrites the other; the same overrides twice are refused."""
    variants = [Variant("a_b", {"collect.subset": ["a*b"]}), Variant("a_b", {"collect.subset": ["a?b"]}),
                Variant("head", {"collect.subset": ["head.*"]})]
    labels = [v.label for v in distinct_labels(variants)]
    assert len(set(labels)) == 3 and labels[2] == "head" and all(label.startswith("a_b-") for label in labels[:2])
    assert labels == [v.label for v in distinct_labels(variants)]
    with pytest.raises(ConfigError, match="two values ask for the same variant 'head'"):
        distinct_labels([*variants, Variant("head", {"collect.subset": ["head.*"]})])
