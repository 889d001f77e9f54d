"""A tiny run of every stage on the default task (seconds), resume, force, and the run-folder checks."""

import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pdiff.errors import ArtifactError, HealthError
from pdiff.pipeline import Run, expected_costs, run_pipeline, run_stage
from pdiff.presets import load_config
from pdiff.sample import sample_models
from pdiff.store import load_tensors, save_tensors
from pdiff.tasks.imagefolder import image_folder_identity
from pdiff.tasks.models import build_model
from tests.conftest import copy_stages, tiny_config, write_checkpoints, write_image_folder


@pytest.fixture(scope="module")
def finished(tiny_run, tmp_path_factory) -> Run:
    """A copy of the shared tiny run (these tests rerun and force its stages)."""
    root = tmp_path_factory.mktemp("runs") / tiny_run.name
    shutil.copytree(tiny_run, root)
    return Run(tiny_config(), root, progress=False)


def test_every_artifact_is_written(finished: Run) -> None:
    root = finished.root
    for name in ["config.yaml", "collect/base.safetensors", "collect/checkpoints.safetensors",
                 "train/autoencoder.safetensors", "train/diffusion.safetensors", "train/metrics.csv",
                 "generate/generated.safetensors", "evaluate/results.json", "evaluate/predictions.safetensors",
                 "report/report.md", "report/report.html",
                 "report/accuracy_hist.png", "report/accuracy_vs_similarity.png", "report/iou_bars.png",
                 "report/tsne.png"]:
        assert (root / name).is_file(), name
    assert not list(root.rglob("*.tmp"))
    ckpts = load_file(root / "collect/checkpoints.safetensors")
    assert ckpts["params"].shape == (12, 128)  # K x (2 BN layers x 32 channels x weight+bias)
    assert ckpts["val_accuracy"].shape == ckpts["test_accuracy"].shape == (12,)
    generated = load_file(root / "generate/generated.safetensors")
    assert generated["params"].shape == (6, 128) and generated["latents"].shape == (6, 8)
    assert generated["original_latents"].shape == (12, 8)  # for the report's t-SNE: evaluate never opens train/


def test_results_json(finished: Run) -> None:
    results = json.loads((finished.root / "evaluate/results.json").read_text())
    groups = [m["group"] for m in results["models"]]
    baselines = ["noise@0.001", "noise@0.05", "noise@0.15", "finetune", "mean_of_k", "gaussian"]
    assert groups == ["original"] * 12 + ["ensemble"] + ["generated"] * 6 + [g for g in baselines for _ in range(6)]
    assert list(results["summary"]) == ["original", "ensemble", "generated", *baselines]
    assert results["baselines"]["mean_of_k"] == 12  # evaluate.mean_of_k=16 capped at the 12 checkpoints
    assert all(0 <= m["test_accuracy"] <= 1 and 0 <= m["val_accuracy"] <= 1 for m in results["models"])
    assert results["summary"]["original"]["mean"] > 0.3  # far above chance (0.1) even after 2 epochs
    predictions = load_file(finished.root / "evaluate/predictions.safetensors")
    assert predictions["predictions"].shape == (len(groups), len(predictions["labels"]))
    assert predictions["predictions"].dtype == torch.int16
    correct = (predictions["predictions"][0] == predictions["labels"]).float().mean().item()
    assert correct == pytest.approx(results["models"][0]["test_accuracy"])
    similarity = results["similarity"]
    assert set(similarity["mean_iou"]) >= {"original-original", "original-generated", "generated-generated"}
    assert set(similarity["max_iou_to_original"]) == set(results["summary"])  # every group, originals too
    distances = similarity["distance_to_original"]
    assert len(distances["generated"]["values"]) == 6 and distances["original"]["mean"] > 0
    assert distances["noise@0.001"]["mean"] < distances["noise@0.15"]["mean"]  # noise moves models away


def test_report_holds_table_and_figure(finished: Run) -> None:
    text = (finished.root / "report/report.md").read_text()
    assert "| original | 12 |" in text and "![accuracy_hist.png](accuracy_hist.png)" in text
    for figure in ["accuracy_vs_similarity.png", "iou_bars.png", "tsne.png"]:
        assert f"![{figure}]({figure})" in text
    assert "| mean_of_k | 6 |" in text
    assert "data:image/png;base64," in (finished.root / "report/report.html").read_text()


def test_rerun_skips_finished_stages(finished: Run) -> None:
    mtimes = {p: p.stat().st_mtime_ns for p in finished.root.rglob("*.safetensors")}
    again = run_pipeline(tiny_config(), finished.root.parent, progress=False)
    assert again.seconds == {}  # nothing ran
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def test_changed_config_reruns_only_downstream(finished: Run) -> None:
    before = load_file(finished.root / "collect/checkpoints.safetensors")["params"]
    again = run_pipeline(tiny_config("generate.n=4"), finished.root.parent, progress=False)
    assert set(again.seconds) == {"generate", "evaluate", "report"}
    assert torch.equal(before, load_file(finished.root / "collect/checkpoints.safetensors")["params"])
    assert load_file(finished.root / "generate/generated.safetensors")["params"].shape == (4, 128)
    run_pipeline(tiny_config(), finished.root.parent, progress=False)  # restore for the other tests


def test_force_reruns_a_stage(finished: Run) -> None:
    run = Run(tiny_config(), finished.root, progress=False)
    assert run_stage(run, "report", force=True)
    assert not run_stage(run, "report")


def test_same_seed_same_results(finished: Run, tmp_path) -> None:
    other = run_pipeline(tiny_config(), tmp_path, stages=("collect",), progress=False)
    a = load_file(finished.root / "collect/checkpoints.safetensors")["params"]
    assert torch.equal(a, load_file(other.root / "collect/checkpoints.safetensors")["params"])


def test_sample_writes_loadable_state_dicts(finished: Run, tmp_path) -> None:
    paths = sample_models(finished.root, 3, tmp_path, sampler="ddim", steps=5)
    assert [p.name for p in paths] == ["model_000.safetensors", "model_001.safetensors", "model_002.safetensors"]
    model = build_model("convnet1d", (1, 40), 10)
    model.load_state_dict(load_file(paths[0]))  # a full state_dict: strict loading works


def test_stage_needs_the_one_before(tmp_path) -> None:
    with pytest.raises(ArtifactError, match="needs 'collect' first"):
        run_stage(Run(tiny_config(), tmp_path / "t", progress=False), "train")


def test_checkpoints_from_another_model_are_refused(finished: Run, tmp_path) -> None:
    run = run_pipeline(tiny_config(), tmp_path, stages=("collect",), progress=False)
    path = run.root / "collect/checkpoints.safetensors"
    tensors, meta = load_tensors(path)
    meta["spec"] = {"names": ["fc.weight"], "shapes": [[128]]}  # a checkpoint set of another model
    save_tensors(path, tensors, meta)
    with pytest.raises(Exception, match="no parameter 'fc.weight'.*another model"):
        run_stage(run, "train")


def test_health_gate_stops_a_collapsed_autoencoder(finished: Run, tmp_path) -> None:
    config = tiny_config("train.health_tolerance=-1.0")  # any reconstruction fails this bar
    run = Run(config, finished.root, progress=False)
    with pytest.raises(HealthError, match="collapsed"):
        run_stage(run, "train", force=True)
    assert run.is_done("collect")


def test_collect_retrains_a_base_model_that_is_not_sound(tmp_path) -> None:
    run = run_pipeline(tiny_config(), tmp_path, stages=("collect",), progress=False)
    path = run.root / "collect/base.safetensors"
    tensors, meta = load_tensors(path)
    good = {name: t.clone() for name, t in tensors.items()}
    tensors["head.weight"][0, 0] = float("inf")  # same base_hash, broken weights: must not be reused
    save_tensors(path, tensors, meta)
    assert run_stage(Run(tiny_config(), run.root, progress=False), "collect", force=True)
    again, _ = load_tensors(path)
    assert all(torch.equal(again[name], good[name]) for name in good)  # retrained, deterministically


def test_tokens_generator_runs_train_to_report(tiny_run, tmp_path) -> None:
    """tokens / transformer through the health gate, generate (latents [N, T, c]), evaluate and the report."""
    config = tiny_config("train.autoencoder.arch=tokens", "train.diffusion.arch=transformer",
                         "train.autoencoder.latent_dim=4",
                         "train.autoencoder.kwargs={hidden: 32, token_size: 16, global_dim: 16}",
                         "train.diffusion.kwargs={width: 32, depth: 2, heads: 2, window: 4}")
    copy_stages(tiny_run, tmp_path / config.task, ("collect",))
    root = run_pipeline(config, tmp_path, progress=False).root
    generated = load_file(root / "generate/generated.safetensors")
    # 16 global numbers in 4 tokens, then 4 tensors of 32 numbers in 8 tokens
    assert generated["params"].shape == (6, 128) and generated["latents"].shape == (6, 4 + 8, 4)
    assert generated["original_latents"].shape == (12, 4 + 8, 4)
    assert "collapse" in json.loads((root / "evaluate/results.json").read_text())
    assert (root / "report/tsne.png").stat().st_size > 1000


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_generate_n_reruns_the_cheap_stages_and_says_so(finished: Run, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="pdiff.pipeline"):
        again = run_pipeline(tiny_config("generate.n=5"), finished.root.parent, progress=False)
    assert set(again.seconds) == {"generate", "evaluate", "report"}
    assert "generate, evaluate, report: replacing the finished stages made under another config (generate.n: 6 -> 5)" \
        in caplog.text
    run_pipeline(tiny_config(), finished.root.parent, progress=False)  # restore for the other tests


def test_finished_training_is_replaced_only_when_forced(finished: Run, tmp_path) -> None:
    shutil.copytree(finished.root, tmp_path / finished.root.name)
    before = _snapshot(tmp_path)
    with pytest.raises(ArtifactError, match=r"finished under another config \(collect.k: 12 -> 10\).*--force collect"):
        run_pipeline(tiny_config("collect.k=10"), tmp_path, progress=False)
    with pytest.raises(ArtifactError, match=r"train, generate, evaluate, report finished under another config"):
        run_pipeline(tiny_config("train.diffusion.steps=100"), tmp_path, stages=("train",), progress=False)
    assert _snapshot(tmp_path) == before  # byte for byte
    again = run_pipeline(tiny_config("collect.k=10"), tmp_path, force="collect", progress=False)
    assert set(again.seconds) == {"collect", "train", "generate", "evaluate", "report"}
    assert load_file(again.root / "collect/checkpoints.safetensors")["params"].shape[0] == 10


def test_a_relative_data_dir_is_resolved_when_the_run_is_made(tmp_path, monkeypatch) -> None:
    """config.yaml then names the same folder from any working directory (`pdiff sample`, `pdiff export`)."""
    monkeypatch.chdir(tmp_path)
    run = run_pipeline(tiny_config("data.data_dir=data"), "runs", stages=("collect",), progress=False)
    assert run.config.data.data_dir == str(tmp_path / "data")
    assert f"data_dir: {tmp_path / 'data'}" in (tmp_path / "runs" / run.config.task / "config.yaml").read_text()


def test_relative_checkpoint_globs_are_made_absolute_when_the_run_is_made(tiny_run, tmp_path, monkeypatch) -> None:
    """A run made from your checkpoint files reads the same files from any working directory."""
    from pdiff.run_folder import open_run

    write_checkpoints(tiny_run, tmp_path / "mine", {"a": 0, "b": 1, "c": 2}, "pt")
    monkeypatch.chdir(tmp_path)
    run = run_pipeline(tiny_config("collect.from=mine/*.pt", "collect.base=mine/a.pt"), "runs", stages=("collect",),
                       progress=False)
    assert (run.config.collect.from_, run.config.collect.base) == (f"{tmp_path}/mine/*.pt", f"{tmp_path}/mine/a.pt")
    monkeypatch.chdir(tmp_path / "mine")
    assert open_run(tmp_path / "runs" / run.config.task).checkpoints.params.shape == (3, 128)


def test_changed_images_rerun_collect_with_a_new_base_when_forced(tmp_path, monkeypatch) -> None:
    """Relabelled images: collect is not done any more, and --force collect trains a new base model on them
    instead of reusing the one trained on the old labels."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_image_folder(tmp_path / "images", {"train": {"cat": 4, "dog": 4}, "test": {"cat": 1, "dog": 1}})
    config = tiny_config("data.name=imagefolder", "data.val_size=2", f"data.data_dir={tmp_path / 'images'}",
                         "model.name=convnet3", "model.kwargs={channels: [4, 4, 4]}", "collect.k=3")
    run = run_pipeline(config, tmp_path / "runs", stages=("collect",), progress=False)
    identity = load_tensors(run.root / "collect/base.safetensors")[1]["data"]
    (tmp_path / "images/train/cat/000.png").rename(tmp_path / "images/train/dog/100.png")
    assert not Run(config, run.root, progress=False).is_done("collect")
    with pytest.raises(ArtifactError, match="the data changed since"):
        run_pipeline(config, tmp_path / "runs", stages=("collect",), progress=False)
    again = run_pipeline(config, tmp_path / "runs", stages=("collect",), force="collect", progress=False)
    meta = load_tensors(again.root / "collect/base.safetensors")[1]
    assert meta["data"] != identity and meta["data"] == again.task.data_identity
    assert again.is_done("collect")


def test_a_copied_image_folder_keeps_its_runs_and_older_records_still_match(tmp_path, monkeypatch) -> None:
    """New modification times on the same images leave collect done; a stage recorded with the identity that
    still held modification times matches while the files are untouched, and not after they are touched."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    write_image_folder(tmp_path / "images", {"train": {"cat": 4, "dog": 4}, "test": {"cat": 1, "dog": 1}})
    config = tiny_config("data.name=imagefolder", "data.val_size=2", f"data.data_dir={tmp_path / 'images'}",
                         "model.name=convnet3", "model.kwargs={channels: [4, 4, 4]}", "collect.k=3")
    run = run_pipeline(config, tmp_path / "runs", stages=("collect",), progress=False)
    marker = run.stage_dir("collect") / "stage.json"
    recorded = json.loads(marker.read_text())
    marker.write_text(json.dumps({**recorded, "data": image_folder_identity(tmp_path / "images", with_mtimes=True)}))
    assert Run(config, run.root, progress=False).is_done("collect")
    image = tmp_path / "images/train/cat/000.png"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert not Run(config, run.root, progress=False).is_done("collect")  # the older record cannot tell a touch
    marker.write_text(json.dumps(recorded))
    assert Run(config, run.root, progress=False).is_done("collect")  # this one can: the same bytes


def test_raising_the_generators_keeps_the_trained_ones(tiny_run, tmp_path, caplog) -> None:
    """A finished run asked for train.generators=2 is refused with the way on; with --force train only the new
    generator is trained, and generator 0's files are the single run's."""
    root = tmp_path / tiny_run.name
    shutil.copytree(tiny_run, root)
    config = tiny_config("train.generators=2")
    with pytest.raises(ArtifactError, match="train.generators: 1 -> 2.*--force train keeps the generators already"):
        run_pipeline(config, tmp_path, progress=False)
    with caplog.at_level(logging.INFO, logger="pdiff.train"):
        run = run_pipeline(config, tmp_path, progress=False, force="train")
    assert "generator 0 is already trained under this config: kept" in caplog.text
    assert load_file(root / "train/diffusion.safetensors").keys() == load_file(
        tiny_run / "train/diffusion.safetensors").keys()
    assert all(torch.equal(load_file(root / "train/diffusion.safetensors")[k], v)
               for k, v in load_file(tiny_run / "train/diffusion.safetensors").items())
    assert (root / "train/generator-1/diffusion.safetensors").is_file() and run.is_done("report")


def test_before_a_run_each_stage_says_what_it_is_expected_to_take() -> None:
    """Measured for the preset (from the committed benchmark results): time and memory; another config of a
    stage, or a task nobody measured: unknown, after what the preset says it is sized for."""
    lines = expected_costs(load_config("mnist-mlp-full"), ["collect", "train"])
    assert lines[0].startswith("collect: expected about ") and "GiB (on 2 CPU cores)" in lines[0]
    changed = expected_costs(load_config("mnist-mlp-full", ["train.diffusion.steps=10"]), ["collect", "train"])
    assert changed[0].startswith("mnist-mlp-full is sized for: cpu") and changed[1] == lines[0]
    assert changed[2] == "train: expected time and memory unknown"
    renamed = expected_costs(load_config("mnist-mlp-full", ["task=mine"]), ["collect"])
    assert renamed == ["collect: expected time and memory unknown"]
    assert all(len(line) < 80 for line in lines)
