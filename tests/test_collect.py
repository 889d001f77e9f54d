import copy
import importlib
import logging
import os
import re
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file

from pdiff.adapters import save_adapter
from pdiff.checkpoints import CheckpointSet
from pdiff.collect import BASE_FILE, CHECKPOINTS_FILE, FOLDER, collect, first_k, load, train_base
from pdiff.collect import run as collect_stage
from pdiff.errors import ArtifactError, ConfigError, DatasetError, TrainingError
from pdiff.inference import accuracy, labels_of, predict
from pdiff.params import ParamSpec
from pdiff.pipeline import Run, run_stages
from pdiff.presets import load_config
from pdiff.run_folder import open_run
from pdiff.store import load_tensors, save_tensors
from pdiff.task import Task
from pdiff.tasks.datasets import Split, TensorLoader
from pdiff.tasks.models import MLP
from pdiff.train import split
from tests.conftest import TINY, TINY_ADAPTERS, tiny_config, write_checkpoints


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


# ---- your own checkpoints (collect.from, collect.base, train.holdout_from) --------------------------------
NATURAL = {"ckpt_1": 0, "ckpt_2": 1, "ckpt_10": 2, "ckpt_11": 3}  # natural order: rows 0..3


def read_plain(path, kind: str) -> dict[str, torch.Tensor]:
    """The state_dict in the checkpoint at `path`, read with plain torch / safetensors."""
    if kind in ("pt", "wrapped"):
        state = torch.load(path, weights_only=True)
        return state["model"] if kind == "wrapped" else state
    return load_file(str(path / "model.safetensors" if kind == "folder" else path))


def plain_torch_accuracy(task: Task, path, kind: str) -> tuple[float, float]:
    """(val, test) accuracy of the checkpoint at `path`, loaded into a fresh model with plain torch."""
    model = task.new_model()
    model.load_state_dict(read_plain(path, kind))
    model.eval()
    with torch.no_grad():
        return tuple((model(getattr(task.data, split).x).argmax(1) == task.labels(split)).float().mean().item()
                     for split in ("val", "test"))


@pytest.mark.parametrize("kind", ["safetensors", "pt", "wrapped", "folder"])
def test_collect_from_reads_each_kind_in_natural_order(tiny_run, tmp_path, kind: str) -> None:
    paths = write_checkpoints(tiny_run, tmp_path / "mine", dict(reversed(NATURAL.items())), kind)
    key = ["collect.state_dict_key=model"] if kind == "wrapped" else []
    task = Task(tiny_config(f"collect.from={tmp_path}/mine/ckpt_*", *key), progress=False)
    out = tmp_path / "run" / FOLDER
    out.mkdir(parents=True)
    summary = collect_stage(task, tmp_path / "run", out)
    assert summary["checkpoint_files"] == [str(p) for p in reversed(paths)]  # ckpt_2 before ckpt_10
    ckpts = load(task, tmp_path / "run").checkpoints  # K = the files matched, not collect.k
    original = load(Task(tiny_config(), progress=False), tiny_run).checkpoints
    assert torch.equal(ckpts.params, original.params[:4])
    for i, path in enumerate(reversed(paths)):
        val, test = plain_torch_accuracy(task, path, kind)
        assert (ckpts.val_accuracy[i].item(), ckpts.test_accuracy[i].item()) == (val, test)
    assert torch.equal(ckpts.test_predictions, original.test_predictions[:4])
    base, meta = load_tensors(out / BASE_FILE)  # the first checkpoint is the base, never reused as a trained one
    first = read_plain(paths[-1], kind)
    assert all(torch.equal(base[name], first[name]) for name in first) and meta["base_hash"] is None


def test_collect_base_starts_pdiffs_own_collection_from_your_model(tiny_run, tmp_path, monkeypatch) -> None:
    given = tiny_run / FOLDER / BASE_FILE
    trained = lambda *args, **kwargs: pytest.fail("the base was trained")  # noqa: E731
    monkeypatch.setattr(importlib.import_module("pdiff.collect"), "train_base", trained)
    task = Task(tiny_config(f"collect.base={given}", "collect.k=3"), progress=False)
    out = tmp_path / FOLDER
    out.mkdir()
    collect_stage(task, tmp_path, out)
    saved, _ = load_tensors(out / BASE_FILE)
    expected, _ = load_tensors(given)
    assert all(torch.equal(saved[name], expected[name]) for name in expected)
    assert load(task, tmp_path).checkpoints.params.shape == (3, 128)


def test_differences_outside_the_subset_are_named_and_the_base_is_used(tiny_run, tmp_path, caplog) -> None:
    paths = write_checkpoints(tiny_run, tmp_path / "mine", {"a": 0, "b": 1}, "pt")
    state = torch.load(paths[1], weights_only=True)
    state["head.bias"] += 1
    torch.save(state, paths[1])
    task = Task(tiny_config(f"collect.from={tmp_path}/mine/*.pt", f"collect.base={tiny_run}/collect/base.safetensors"),
                progress=False)
    out = tmp_path / FOLDER
    out.mkdir()
    with caplog.at_level(logging.WARNING, logger="pdiff.checkpoint_files"):
        collect_stage(task, tmp_path, out)
    assert "head.bias" in caplog.text and "b.pt" in caplog.text
    original = load(Task(tiny_config(), progress=False), tiny_run).checkpoints
    assert torch.equal(load(task, tmp_path).checkpoints.test_predictions, original.test_predictions[:2])


def test_a_changed_checkpoint_file_reruns_collect(tiny_run, tmp_path) -> None:
    paths = write_checkpoints(tiny_run, tmp_path / "mine", {"a": 0, "b": 1, "c": 2}, "safetensors")
    overrides = [*TINY, f"collect.from={tmp_path}/mine/*.safetensors"]
    run = run_stages(Run(load_config("mnist1d-convnet", overrides), tmp_path / "runs", progress=False), ("collect",))
    os.utime(paths[0])  # touched, the same bytes: still done
    assert Run(load_config("mnist1d-convnet", overrides), run.root, progress=False).is_done("collect")
    write_checkpoints(tiny_run, tmp_path / "other", {"a": 5}, "safetensors")[0].replace(paths[1])
    later = os.stat(paths[1]).st_mtime_ns + 10**9
    os.utime(paths[1], ns=(later, later))
    changed = Run(load_config("mnist1d-convnet", overrides), run.root, progress=False)
    assert not changed.is_done("collect")
    with pytest.raises(ArtifactError, match="a file of collect.from changed since.*--force collect"):
        run_stages(changed, ("collect",))
    run_stages(changed, ("collect",), force="collect")
    original = load(Task(tiny_config(), progress=False), tiny_run).checkpoints
    assert torch.equal(load(changed.task, run.root).checkpoints.params, original.params[[0, 5, 2]])


def test_holdout_from_holds_out_another_runs_checkpoints(tiny_run, tmp_path) -> None:
    write_checkpoints(tiny_run, tmp_path / "mine", {f"c{i}": i for i in range(8)}, "pt")
    write_checkpoints(tiny_run, tmp_path / "other", {f"h{i}": i for i in range(8, 12)}, "pt")
    task = Task(tiny_config(f"collect.from={tmp_path}/mine/*.pt", f"train.holdout_from={tmp_path}/other/*.pt"),
                progress=False)
    out = tmp_path / FOLDER
    out.mkdir()
    collect_stage(task, tmp_path, out)
    training, heldout = split(task, tmp_path, load(task, tmp_path))
    original = load(Task(tiny_config(), progress=False), tiny_run).checkpoints
    assert torch.equal(training.params, original.params[:8]) and torch.equal(heldout.params, original.params[8:])


def test_a_run_with_adapters_collects_the_adapters_of_the_trained_model(tiny_adapter_run: Path) -> None:
    run = open_run(tiny_adapter_run)
    spec, base = run.checkpoints.spec, run.base_model
    assert spec.names == tuple(f"base_model.model.net.{layer}.lora_{m}.default.weight" for layer in (1, 4)
                               for m in "AB")
    assert run.base_state[1]["peft"] == {"target_modules": ["net.1", "net.4"], "r": 2}
    # The adapters learnt on the trained model (lora_B leaves zero), and kept learning between checkpoints.
    assert spec.flatten(base).abs().sum() > 0 and run.checkpoints.params.std(0).max() > 0


def write_adapters(run_dir: Path, folder: Path, rows: dict[str, int]) -> Path:
    """The adapters of `run_dir`'s checkpoints `rows` (name -> row) as PEFT adapter folders in `folder`, and the
    base model without its adapters as folder/base.safetensors (returned)."""
    run = open_run(run_dir)
    model, spec = copy.deepcopy(run.base_model), run.checkpoints.spec
    for name, row in rows.items():
        save_adapter(spec.load_into(model, run.checkpoints.params[row]), folder / "adapters" / name)
    base = folder / "base.safetensors"
    save_file({name: t.contiguous() for name, t in copy.deepcopy(model).unload().state_dict().items()}, str(base))
    return base


def test_collect_from_peft_adapter_folders_reads_them_onto_the_given_base(tiny_adapter_run: Path, tmp_path: Path
                                                                         ) -> None:
    base = write_adapters(tiny_adapter_run, tmp_path, {"a_1": 0, "a_2": 5, "a_10": 2})
    task = Task(tiny_config(*TINY_ADAPTERS, f"collect.from={tmp_path}/adapters/*", f"collect.base={base}"),
                progress=False)
    out = tmp_path / FOLDER
    out.mkdir()
    collect_stage(task, tmp_path, out)
    ckpts = load(task, tmp_path).checkpoints
    assert torch.equal(ckpts.params, open_run(tiny_adapter_run).checkpoints.params[[0, 5, 2]])  # natural order
    for name, test_accuracy in zip(("a_1", "a_2", "a_10"), ckpts.test_accuracy, strict=True):  # as PEFT loads them
        model = MLP((1, 40), 10, hidden=(16, 8))
        model.load_state_dict(load_file(str(base)))
        adapted = peft.PeftModel.from_pretrained(model, tmp_path / "adapters" / name)
        assert accuracy(predict(adapted, task.loader("test")), task.labels("test")) == test_accuracy


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.peft=null", "collect.subset=[last_norm:2]"], "gives PEFT adapter folders .* but the model has no "
                                                          "adapters: set model.peft"),
    (["collect.base=null"], "which hold no base model: give the trained model they adapt with collect.base"),
    (["model.peft={target_modules: [net.1, net.4], r: 2, lora_alpha: 16}"],
     r"adapter_config.json has lora_alpha=8, model.peft gives 16: set model.peft.lora_alpha to the adapters' value"),
])
def test_adapter_folders_that_do_not_fit_are_one_line(tiny_adapter_run: Path, tmp_path: Path, overrides: list[str],
                                                      message: str) -> None:
    base = write_adapters(tiny_adapter_run, tmp_path, {"a_1": 0, "a_2": 1})
    task = Task(tiny_config(*TINY_ADAPTERS, f"collect.from={tmp_path}/adapters/*", f"collect.base={base}",
                            *overrides), progress=False)
    (tmp_path / FOLDER).mkdir()
    with pytest.raises(ConfigError, match=message) as error:
        collect_stage(task, tmp_path, tmp_path / FOLDER)
    assert "\n" not in str(error.value)
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
