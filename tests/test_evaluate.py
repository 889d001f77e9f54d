"""The evaluate stage alone on a tiny run folder: the originals are not evaluated again, results and loader."""

import json

import pytest
import torch

import pdiff
from pdiff import evaluate, inference
from pdiff.errors import ArtifactError, ConfigError
from pdiff.pipeline import run_pipeline
from pdiff.similarity import similarity_summary
from pdiff.store import save_json
from pdiff.task import Task
from pdiff.verdicts import DOMINANCE_VERDICTS
from pdiff.words import verdict_lines
from tests.conftest import copy_stages, tiny_config


def test_stage_alone_writes_results_and_predictions(tiny_run, tmp_path, monkeypatch) -> None:
    task = Task(tiny_config(), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("collect", "train", "generate"))
    out = root / evaluate.FOLDER
    out.mkdir()
    evaluated = []
    real = inference.predict_many_local

    def counting(model, spec, vectors, *args, **kwargs):
        evaluated.append(len(vectors))
        return real(model, spec, vectors, *args, **kwargs)

    monkeypatch.setattr(inference, "predict_many_local", counting)
    evaluate.run(task, root, out)
    assert sorted(p.name for p in out.iterdir()) == [evaluate.PREDICTIONS_FILE, evaluate.RESULTS_FILE]
    assert 12 not in evaluated  # the 12 originals were measured by the collection, not here
    results = evaluate.load(task, root)
    whole_run = json.loads((tiny_run / "evaluate/results.json").read_text())
    assert {**results, "provenance": None} == {**whole_run, "provenance": None}  # the whole run's but its commit
    assert [m["group"] for m in results["models"]][:19] == ["original"] * 12 + ["ensemble"] + ["generated"] * 6


def test_every_group_is_compared_with_a_ci_and_a_verdict(tiny_run) -> None:
    results = evaluate.load(Task(tiny_config(), progress=False), tiny_run)
    assert 0 < results["resolution"] < 0.2  # a fraction: +-x of accuracy
    comparisons = results["comparisons"]
    keys = {"group", "versus", "metric", "difference", "ci_low", "ci_high", "p_value", "verdict", "scope"}
    assert all(set(c) == keys | ({"margin", "accuracy", "similarity"} if c["metric"] == "dominance" else set())
               for c in comparisons)
    versus_original = {(c["group"], c["metric"]) for c in comparisons if c["versus"] == "original"}
    metrics = {"mean_test_accuracy", "median_test_accuracy", "best_val_chosen_test_accuracy", "median_max_iou",
               "median_l2_to_original"}
    assert versus_original == {(g, m) for g in results["summary"] if g != "original" for m in metrics}
    for c in comparisons:
        if c["metric"] == "dominance":
            assert c["versus"] == "generated" and c["verdict"] in DOMINANCE_VERDICTS
        elif c["metric"] in ("median_test_accuracy", "best_val_chosen_test_accuracy"):  # descriptive
            assert c["ci_low"] is c["ci_high"] is None and c["verdict"] == "descriptive (no verdict)"
        else:
            assert c["ci_low"] <= c["difference"] <= c["ci_high"] and c["scope"] == "generator"
            assert c["verdict"] in ("higher", "lower", "no detectable difference")
    assert {c["group"] for c in comparisons if c["metric"] == "dominance"} == set(results["summary"]) - {
        "original", "generated"}


def test_load_refuses_a_malformed_results_file(tiny_run, tmp_path) -> None:
    task = Task(tiny_config(), progress=False)
    root = copy_stages(tiny_run, tmp_path, ("evaluate",))
    save_json(root / "evaluate/results.json", [1, 2])
    with pytest.raises(ArtifactError, match="holds no evaluation summary: rerun `pdiff evaluate --force`"):
        evaluate.load(task, root)


def test_collapse_is_most_generated_models_below_the_worst_original() -> None:
    originals = [{"group": "original", "test_accuracy": a} for a in (0.90, 0.92, 0.95)]

    def check(generated: list[float]) -> dict:
        return evaluate.collapse(originals + [{"group": "generated", "test_accuracy": a} for a in generated], 0.01)

    assert check([0.10, 0.11, 0.12, 0.93]) == {"worst_original": 0.90, "resolution": 0.01, "share_below": 0.75,
                                                "collapsed": True}
    assert not check([0.10, 0.895, 0.93, 0.94])["collapsed"]  # 0.895 is within the resolution of 0.90
    assert "collapsed" in evaluate.collapse_message(check([0.1, 0.1]))
    assert "train.autoencoder.arch=tokens" in evaluate.collapse_message(check([0.1, 0.1]))


def test_one_original_is_compared_on_accuracy_only() -> None:
    """K = 1 (the paper's smallest K ablation): no other original to be similar to, no halves to resolve."""
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (200,))
    predictions = torch.where(torch.rand(5, 200) < 0.8, labels, (labels + 1) % 3)  # 1 original, 4 generated
    groups = ["original"] + ["generated"] * 4
    records = [{"group": g, "val_accuracy": 0.8, "test_accuracy": 0.8} for g in groups]
    similarity = similarity_summary(predictions, labels, groups, torch.randn(5, 8))
    decided = evaluate.decide(records, predictions == labels, similarity, torch.randn(5, 8))
    assert "resolution" not in decided
    assert {c["metric"] for c in decided["comparisons"]} == {"mean_test_accuracy", "median_test_accuracy",
                                                             "best_val_chosen_test_accuracy"}


def test_several_generators_give_method_scope_verdicts(tmp_path) -> None:
    """With train.generators=2 each generated record names its generator and the generated group's mean
    comparisons speak for the method; the report says so in words."""
    run = run_pipeline(tiny_config("train.generators=2", "generate.n=6"), tmp_path, progress=False)
    results = json.loads((run.root / "evaluate/results.json").read_text())
    assert [m["generator"] for m in results["models"] if m["group"] == "generated"] == [0, 0, 0, 1, 1, 1]
    assert all("generator" not in m for m in results["models"] if m["group"] != "generated")
    mean = next(c for c in results["comparisons"] if (c["group"], c["metric"]) == ("generated", "mean_test_accuracy"))
    assert mean["scope"] == "method" and mean["ci_low"] <= mean["difference"] <= mean["ci_high"]
    assert {c["scope"] for c in results["comparisons"] if (c["group"], c["versus"]) == ("ensemble", "original")} == {
        "generator"}
    assert {c["scope"] for c in results["comparisons"] if c["metric"] == "dominance"} == {"method"}  # IoU too
    lines = verdict_lines(results)
    assert any(line.startswith("generated vs original, mean test accuracy") and "(p-diff on this task, 2 generators)"
               in line for line in lines)
    assert results["provenance"]["threads"] >= 1 and "torch" in results["provenance"]


def tiny_models() -> tuple[torch.nn.Module, pdiff.ParamSpec, list, list, torch.Tensor]:
    """An MLP trained a few steps on a toy problem, its last BatchNorm as the subset, (x, y) batch lists for
    val and test, and its subset's vector [D]."""
    torch.manual_seed(0)
    x = torch.randn(600, 8)
    y = (x[:, :4].sum(1) > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 2))
    optimizer = torch.optim.Adam(model.parameters(), 0.05)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:400]), y[:400]).backward()
        optimizer.step()
    spec = pdiff.ParamSpec.select(model, "last_norm:1")
    batches = [(x[i:i + 50], y[i:i + 50]) for i in range(400, 600, 50)]
    return model, spec, batches[:2], batches[2:], spec.flatten(model).detach()


def test_evaluate_models_measures_any_model_and_writes_the_report(tmp_path) -> None:
    model, spec, val, test, vector = tiny_models()
    originals = vector + 0.02 * torch.randn(8, spec.dim)
    generated = vector + 0.02 * torch.randn(6, spec.dim)
    train = [(torch.randn(32, 8), torch.randint(0, 2, (32,)))]
    results = pdiff.evaluate_models(model, spec, {"original": originals, "generated": generated}, val, test,
                                    ["ensemble", "noise", "finetune", "gaussian"], noise_strengths=[0.1],
                                    finetune=pdiff.FineTuning(train, steps=2))
    assert list(results["summary"]) == ["original", "ensemble", "generated", "noise@0.1", "finetune", "gaussian"]
    assert results["summary"]["generated"]["count"] == 6 and results["summary"]["noise@0.1"]["count"] == 6
    mean = next(c for c in results["comparisons"] if c["group"] == "generated" and c["versus"] == "original"
                and c["metric"] == "mean_test_accuracy")
    assert mean["ci_low"] <= mean["difference"] <= mean["ci_high"] and mean["verdict"]
    assert {"generated", "original"} <= set(results["similarity"]["max_iou_to_original"])
    assert results["collapse"]["collapsed"] is False and "resolution" in results
    report = pdiff.write_report(results, tmp_path / "report")
    assert "generated vs original, mean test accuracy" in report.read_text()
    assert (tmp_path / "report" / "report.html").is_file()


def test_evaluate_models_warns_of_collapse_with_the_fix(caplog) -> None:
    model, spec, val, test, vector = tiny_models()
    broken = vector + 50 * torch.randn(6, spec.dim)
    results = pdiff.evaluate_models(model, spec, {"original": vector + 0.01 * torch.randn(6, spec.dim),
                                                  "generated": broken}, val, test, baselines=[])
    assert results["collapse"]["collapsed"]
    assert "generation has collapsed. Try" in caplog.text


@pytest.mark.parametrize("groups, baselines, message", [
    ({"original": 1}, [], "groups has no 'generated'"),
    ({"original": torch.zeros(3, 5), "generated": torch.zeros(2, 5)}, [], r"groups\['original'\] is \(3, 5\): give "
                                                                          r"\[M, 32\] parameter vectors"),
    (None, ["finetune"], "pass finetune=FineTuning\\(train_loader\\)"),
    (None, ["noise", "median"], "baselines: unknown 'median'"),
])
def test_evaluate_models_refuses_bad_input_in_one_line(groups, baselines, message) -> None:
    model, spec, val, test, vector = tiny_models()
    groups = groups or {"original": vector.repeat(3, 1), "generated": vector.repeat(2, 1)}
    with pytest.raises(ConfigError, match=message):
        pdiff.evaluate_models(model, spec, groups, val, test, baselines)
