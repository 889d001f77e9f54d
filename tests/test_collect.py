import copy
import re

import pytest
import torch

from pdiff.checkpoints import CheckpointSet
from pdiff.collect import BASE_FILE, CHECKPOINTS_FILE, FOLDER, collect, first_k, load, train_base
from pdiff.collect import run as collect_stage
from pdiff.errors import ArtifactError, ConfigError, DatasetError, TrainingError
from pdiff.inference import accuracy, labels_of, predict
from pdiff.params import ParamSpec
from pdiff.store import save_tensors
from pdiff.task import Task
from pdiff.tasks.datasets import Split, TensorLoader
from pdiff.tasks.models import MLP
from tests.conftest import tiny_config


def blobs(n: int = 256, seed: int = 0) -> Split:
    """Four well-separated Gaussian classes in 8-D."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    centres = torch.eye(8)[:4] * 4
    return Split((centres[y] + torch.randn(n, 8, generator=g)).unsqueeze(1), y)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = MLP((1, 8), 4, hidden=(16, 16))
    loader = TensorLoader(blobs(), 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    train_base(model, loader, epochs=5, lr=0.05, progress=False)
    return model, loader


def test_base_training_beats_chance(trained) -> None:
    model, _ = trained
    test = TensorLoader(blobs(seed=1), 64)
    assert accuracy(predict(model, test), labels_of(test)) > 0.9


@pytest.mark.parametrize("recipe", ["epoch", "iteration"])
def test_collect_trains_only_the_subset(trained, recipe: str) -> None:
    model, loader = trained
    model = copy.deepcopy(model)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    spec = ParamSpec.select(model, "last_norm:2")
    ckpts = collect(model, loader, spec, k=10, recipe=recipe, lr=0.01 if recipe == "epoch" else 0.003,
                    progress=False)
    assert ckpts.params.shape == (10, spec.dim)
    assert len(torch.unique(ckpts.params, dim=0)) == 10  # every checkpoint differs
    for name, tensor in model.state_dict().items():
        if name not in spec.names:
            assert torch.equal(tensor, before[name]), name  # frozen weights and BN running stats
    assert all(p.requires_grad for p in model.parameters())  # restored


def test_diverging_training_names_the_fix() -> None:
    model = MLP((1, 8), 4, hidden=(16,))
    data = blobs(64)
    data.x[0, 0, 0] = float("nan")
    with pytest.raises(TrainingError, match="lower collect.lr"):
        train_base(model, TensorLoader(data, 64), epochs=1, progress=False)


def test_checkpoint_set_round_trip_and_checks(tmp_path) -> None:
    spec = ParamSpec(("w",), ((3,),))
    ckpts = CheckpointSet(torch.randn(5, 3), spec, torch.rand(5), torch.rand(5))
    ckpts.save(tmp_path / "c.safetensors", {"task": "t"})
    loaded, meta = CheckpointSet.load(tmp_path / "c.safetensors")
    assert torch.equal(loaded.params, ckpts.params) and loaded.spec == spec and meta["task"] == "t"
    bad = torch.randn(5, 3)
    bad[1, 1] = float("inf")
    save_tensors(tmp_path / "inf.safetensors", {"params": bad}, {"spec": spec.to_dict()})
    with pytest.raises(ArtifactError, match="NaN or Inf"):
        CheckpointSet.load(tmp_path / "inf.safetensors")
    save_tensors(tmp_path / "other.safetensors", {"params": torch.randn(5, 4)}, {"spec": spec.to_dict()})
    with pytest.raises(ArtifactError, match="columns"):
        CheckpointSet.load(tmp_path / "other.safetensors")


# ---- the stage ------------------------------------------------------------------------------------
def test_stage_alone_writes_base_and_evaluated_checkpoints(tmp_path) -> None:
    task = Task(tiny_config(), progress=False)
    out = tmp_path / FOLDER
    out.mkdir()
    summary = collect_stage(task, tmp_path, out)
    assert sorted(p.name for p in out.iterdir()) == [BASE_FILE, CHECKPOINTS_FILE]
    assert summary["dim"] == 128 and len(summary["names"]) == 4
    collected = load(task, tmp_path)
    ckpts = collected.checkpoints
    assert ckpts.params.shape == (12, 128) and ckpts.test_predictions.shape == (12, len(task.labels("test")))
    rebuilt = (ckpts.test_predictions == task.labels("test")).float().mean(1)  # the stored predictions are the
    assert torch.equal(rebuilt, ckpts.test_accuracy)  # ones the accuracies were measured on
    assert not collected.model.training


def test_first_k_takes_a_prefix_under_the_new_hash(tiny_run, tmp_path) -> None:
    task = Task(tiny_config("collect.k=5"), progress=False)
    out = tmp_path / FOLDER
    out.mkdir()
    assert first_k(task, tiny_run, out)["dim"] == 128
    prefix = load(task, tmp_path).checkpoints  # checked against collect.k=5's hash
    full = load(Task(tiny_config(), progress=False), tiny_run).checkpoints
    assert torch.equal(prefix.params, full.params[:5]) and torch.equal(prefix.test_predictions,
                                                                       full.test_predictions[:5])


def test_a_model_returning_a_tuple_is_one_clear_error() -> None:
    class Pair(MLP):
        def forward(self, x):
            return super().forward(x), x

    with pytest.raises(TrainingError, match="forward returned a tuple, not a tensor of class scores"):
        train_base(Pair((1, 8), 4, hidden=(16,)), TensorLoader(blobs(), 32), epochs=1, progress=False)


def test_a_loader_of_dicts_is_one_clear_error() -> None:
    batches = [{"image": x, "label": y} for x, y in TensorLoader(blobs(), 64)]
    with pytest.raises(DatasetError, match=r"yields dicts with keys \['image', 'label'\]; pdiff trains on \(x, y\)"):
        train_base(MLP((1, 8), 4, hidden=(16,)), batches, epochs=1, progress=False)


def test_runs_collect_k_over_r_checkpoints_each_aligned_into_one_basis(tmp_path) -> None:
    collected = {}
    for name, runs in (("lone", ["collect.runs=1"]), ("none", ["collect.runs=2", "collect.align=none"]),
                       ("weights", ["collect.runs=2", "collect.align=weights"])):
        task = Task(tiny_config(*runs, "collect.subset=[all]", "collect.k=6"), progress=False)
        out = tmp_path / name / FOLDER
        out.mkdir(parents=True)
        torch.manual_seed(0)  # as the runner seeds the stage
        summary = collect_stage(task, tmp_path / name, out)
        collected[name] = load(task, tmp_path / name).checkpoints
    distance = summary["distance_across_runs"]
    assert summary["runs"] == 2 and distance["after"] < distance["before"]
    ckpts = collected["weights"]
    assert ckpts.runs.tolist() == [0, 0, 0, 1, 1, 1]
    assert ckpts.rows(slice(2, 4)).runs.tolist() == [0, 1]
    # run 0 is the lone run's trajectory, and computes the same with its statistics folded into the parameters
    assert torch.equal(ckpts.test_predictions[:3], collected["lone"].test_predictions[:3])
    assert torch.equal(ckpts.params[:3], collected["none"].params[:3])  # run 0 is the basis
    assert not torch.equal(ckpts.params[3:], collected["none"].params[3:])
    assert torch.equal(ckpts.test_predictions, collected["none"].test_predictions)  # aligned: the same networks


@pytest.mark.parametrize(("overrides", "fix"), [
    (["collect.runs=5", "collect.subset=[all]"], "multiple of the runs"),
    (["collect.runs=2"], "collect.subset=[all]"),
    (["collect.align=weights"], "collect.runs to 2 or more"),
    (["collect.runs=2", "collect.subset=[all]", "collect.align=weights", "model.name=resnet18"], "align=none")])
def test_bad_runs_are_one_line(overrides: list[str], fix: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(fix)) as e:
        tiny_config(*overrides)
    assert "\n" not in str(e.value)
