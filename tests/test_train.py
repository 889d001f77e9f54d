"""The train stage alone on a tiny run folder: generator files, the health gate's figures, the loader's checks."""

import shutil

import pytest
import torch

from pdiff import evaluate, generate, train
from pdiff.collect import load as load_collected
from pdiff.errors import ArtifactError
from pdiff.generator import ParameterGenerator
from pdiff.params import ParamSpec
from pdiff.task import Task
from tests.conftest import copy_stages, tiny_config


def test_stage_alone_writes_the_generator(tiny_run, tmp_path) -> None:
    task = Task(tiny_config(), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect",))
    out = root / train.FOLDER
    out.mkdir()
    summary = train.run(task, root, out)
    assert sorted(p.name for p in out.iterdir()) == ["autoencoder.safetensors", "diffusion.safetensors",
                                                     "metrics.csv"]
    assert set(summary["health"]) == {"original_val_accuracy", "reconstructed_val_accuracy", "differences_kept"}
    assert summary["health"]["differences_kept"] <= 1
    assert "autoencoder" in (out / "metrics.csv").read_text()
    spec = ParamSpec.from_dict({"names": ["features.1.1.weight", "features.1.1.bias", "features.2.1.weight",
                                          "features.2.1.bias"], "shapes": [[32], [32], [32], [32]]})
    assert train.load(task, root, spec).sample(2, "ddim", 5).shape == (2, 128)
    with pytest.raises(ArtifactError, match="trained under another config"):
        train.load(Task(tiny_config("train.diffusion.steps=10"), progress=False), root, spec)


def test_held_out_rows_never_reach_the_generator_and_are_evaluated(tiny_run, tmp_path, monkeypatch) -> None:
    task = Task(tiny_config("train.holdout=3"), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect",))
    all_rows = load_collected(task, root).checkpoints.params
    heldout = all_rows[[3, 7, 11]]  # interleaved: every (12 / 3)-th checkpoint
    fitted = []
    for name in ("fit_autoencoder", "fit_prior"):
        real = getattr(ParameterGenerator, name)

        def spy(self, checkpoints, progress=True, real=real):
            fitted.append(checkpoints.params.clone())
            return real(self, checkpoints, progress)

        monkeypatch.setattr(ParameterGenerator, name, spy)
    for module, folder in ((train, train.FOLDER), (generate, generate.FOLDER), (evaluate, evaluate.FOLDER)):
        (root / folder).mkdir()
        module.run(task, root, root / folder)
    assert len(fitted) == 2 and all(len(params) == 9 for params in fitted)
    assert not any((params[:, None] == heldout[None]).all(-1).any() for params in fitted)
    results = evaluate.load(task, root)
    groups = [m["group"] for m in results["models"]]
    assert groups[:13] == ["original"] * 9 + ["heldout"] * 3 + ["ensemble"]
    assert set(results["generalization"]) == set(results["summary"]) - {"original"}
    figures = results["generalization"]["generated"]
    assert 0 <= figures["coverage_ci_low"] <= figures["coverage"] <= figures["coverage_ci_high"] <= 1
    assert len(figures["distance_to_heldout"]) == 6


def test_differences_kept_is_one_for_a_copy_zero_for_the_mean_and_none_without_differences() -> None:
    x = torch.randn(10, 6)
    assert train.differences_kept(x, x) == pytest.approx(1.0)
    assert train.differences_kept(x, x.mean(0).expand_as(x)) == pytest.approx(0.0, abs=1e-6)
    assert train.differences_kept(x, x.mean(0) + 0.5 * (x - x.mean(0))) == pytest.approx(0.75)
    assert train.differences_kept(torch.ones(3, 6), torch.zeros(3, 6)) is None


def test_several_generators_each_stored_raising_g_trains_only_the_new_ones(tiny_run, tmp_path, monkeypatch) -> None:
    """train.generators=2 stores generator 1 (seed + 1) in train/generator-1/ and generator 0 where a single
    generator always was (it is the one-generator run's); raising to 3 over that folder trains only generator 2."""
    root = copy_stages(tiny_run, tmp_path, ("collect",))
    fitted = []
    real = ParameterGenerator.fit_prior

    def spy(self, *args, **kwargs):
        fitted.append(self.seed)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ParameterGenerator, "fit_prior", spy)
    spec = load_collected(Task(tiny_config(), progress=False), root).checkpoints.spec
    for generators, trained in ((2, [0, 1]), (3, [2])):
        task = Task(tiny_config(f"train.generators={generators}"), progress=False)
        out = tmp_path / f"build-{generators}"
        out.mkdir()
        train.run(task, root, out)
        assert [seed - task.config.seed for seed in fitted] == trained
        fitted.clear()
        assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [f"generator-{s}" for s in range(1, generators)]
        shutil.rmtree(root / train.FOLDER, ignore_errors=True)  # as the runner swaps the new folder in
        out.rename(root / train.FOLDER)
        members = train.load_all(task, root, spec)
        assert [g.seed - task.config.seed for g in members] == list(range(generators))
    single = train.load(Task(tiny_config(), progress=False), tiny_run, spec)
    assert torch.equal(single.sample(3, "ddim", 5, seed=1), members[0].sample(3, "ddim", 5, seed=1))


def test_the_run_split_holds_out_a_second_collection_and_the_generator_learns_all_k(tiny_run, tmp_path,
                                                                                   monkeypatch) -> None:
    task = Task(tiny_config("train.holdout=3", "train.holdout_split=run",
                            "evaluate.baselines=[mean_of_k,gaussian,interpolation]"), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect",))
    run_collection = load_collected(task, root)
    collected = run_collection.checkpoints
    fitted = []
    real = ParameterGenerator.fit_prior

    def spy(self, checkpoints, progress=True):
        fitted.append(checkpoints.params.clone())
        return real(self, checkpoints, progress)

    monkeypatch.setattr(ParameterGenerator, "fit_prior", spy)
    for module, folder in ((train, train.FOLDER), (generate, generate.FOLDER), (evaluate, evaluate.FOLDER)):
        (root / folder).mkdir()
        module.run(task, root, root / folder)
    assert torch.equal(fitted[0], collected.params)  # all K of the run's own collection
    training, heldout = train.split(task, root, run_collection)
    assert training is collected and len(heldout) == 3 and heldout.test_predictions.shape[0] == 3
    assert not (heldout.params[:, None] == collected.params[None]).all(-1).any()  # another trajectory
    results = evaluate.load(task, root)
    assert [m["group"] for m in results["models"]].count("heldout") == 3
    record = results["memorization"]
    assert set(record["baselines"]) == {"mean_of_k", "gaussian", "interpolation"}
    assert record["models_per_group"] == 6 and record["coverage_size"] == 2 and record["heldout_checkpoints"] == 3
    other = Task(tiny_config("train.holdout=3", "train.holdout_split=run", "train.holdout_seed=9"), progress=False)
    with pytest.raises(ArtifactError, match="made under another config"):
        train.split(other, root, run_collection)
