"""Stage 4, evaluate: the accuracy of every model of every group, their predictions and their similarity.

Groups, in results.json order: original (the K checkpoints, measured once by the collection; with
train.holdout, the K - H the generator was fitted on, then `heldout`: the H it never saw), ensemble,
generated, then the baselines (config.BASELINES), all made from the generator's training checkpoints.
Writes evaluate/results.json (one record per model, per-group summary, similarity, comparisons with
CIs) and evaluate/predictions.safetensors (test predictions [M, n_test], row i = record i); `load` reads
results.json back, checked against the config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from . import collect, generate, memorization, stats, train
from .baselines import fine_tuned, gaussian_fit, interpolation, mean_of_k, noise_added, weight_average
from .checkpoints import CheckpointSet
from .errors import ArtifactError
from .hashing import check_hash, config_hash, made_under
from .inference import accuracy, accuracy_many, predict_many
from .layout import PREDICTIONS_FILE, RESULTS_FILE, STAGE_FOLDERS
from .params import Normalizer
from .provenance import provenance
from .similarity import max_iou_to, similarity_summary
from .store import check_format_version, check_record, load_json, load_tensors, save_json, save_tensors
from .task import Task
from .tasks.datasets import TensorLoader

log = logging.getLogger(__name__)
FOLDER = STAGE_FOLDERS["evaluate"]  # runs/<task>/evaluate/
CONFIG_SECTIONS = (*generate.CONFIG_SECTIONS, "evaluate")
RESULTS_FORMAT_VERSION = 1  # of results.json; 0: written before it carried one


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Evaluate the originals, the generated models and the baselines; write results and predictions into `out`."""
    collected = collect.load(task, run_dir)
    model = collected.model
    ckpts, heldout = train.split(task, run_dir, collected.checkpoints)
    generated = generate.load(task, run_dir, ckpts.spec)
    # Per-tensor units, in which the noise baselines' strengths are given (the paper's), whatever
    # train.autoencoder.standardise the generator used.
    normalizer = Normalizer.fit(ckpts.params, ckpts.spec)
    groups, settings = model_groups(task, model, ckpts, generated.params, normalizer)
    if heldout is not None:  # evaluated like the originals, never seen by the generator
        groups = {"original": groups.pop("original"), "heldout": heldout.params, **groups}
    test_labels = task.labels("test")
    measured = {"original": ckpts, "heldout": heldout}  # by the collection: not evaluated again
    records, test_rows = [], []
    for group, vectors in groups.items():
        if group in measured:
            records += _records(group, measured[group].val_accuracy, measured[group].test_accuracy)
            test_rows.append(measured[group].test_predictions.long())
            continue
        chunk, device = task.config.evaluate.model_chunk, task.device
        val_acc = accuracy_many(model, ckpts.spec, vectors, task.loader("val"), chunk, device,
                                desc=task.bar(f"evaluate {group} (val)"))
        test_pred = predict_many(model, ckpts.spec, vectors, task.loader("test"), chunk, device,
                                 desc=task.bar(f"evaluate {group} (test)"))
        made_by = generated.generator.tolist() if group == "generated" else None
        records += _records(group, val_acc, accuracy(test_pred, test_labels), made_by)
        test_rows.append(test_pred)
    predictions, vectors = torch.cat(test_rows), torch.cat(list(groups.values()))  # [M, n_test], [M, D]
    names = [r["group"] for r in records]
    standardised = normalizer.normalize(vectors)
    similarity = similarity_summary(predictions, test_labels, names, standardised)
    results = {"format_version": RESULTS_FORMAT_VERSION, "task": task.config.task,
               "config_hash": config_hash(task.config, CONFIG_SECTIONS), "seed": task.config.seed,
               "spec": ckpts.spec.to_dict(), "models": records,
               "summary": summarise(records), "baselines": settings, "similarity": similarity,
               **decide(records, predictions == test_labels, similarity, standardised, task.config.seed)}
    results["collapse"] = collapse(records, results.get("resolution", 0.0))  # no resolution with one original
    results["provenance"] = provenance(task.device)
    if results["collapse"]["collapsed"]:
        log.warning("evaluate: %s", collapse_message(results["collapse"]))
    save_tensors(out / PREDICTIONS_FILE, {"predictions": predictions.to(torch.int16), "labels": test_labels},
                 {**made_under(task.config, CONFIG_SECTIONS), "spec": ckpts.spec.to_dict()})
    save_json(out / RESULTS_FILE, results)
    return {}


def load(task: Task, run_dir: Path) -> dict:
    """results.json of `run_dir`, checked to be made under this config."""
    return read(run_dir, config_hash(task.config, CONFIG_SECTIONS))


def read(run_dir: Path, config_hash: str) -> dict:
    """results.json of `run_dir`, checked to be made under the config of `config_hash` and of a format_version
    this pdiff reads."""
    path = run_dir / FOLDER / RESULTS_FILE
    results = load_json(path)
    if not isinstance(results, dict) or "summary" not in results:
        raise ArtifactError(f"{path} holds no evaluation summary: rerun `pdiff evaluate --force`")
    check_record(path, results, {"summary": dict, "models": list, "spec": dict}, "rerun `pdiff evaluate --force`")
    check_format_version(path, results, RESULTS_FORMAT_VERSION)
    check_hash(path, results, config_hash, "evaluate")
    return results


def load_correct(task: Task, run_dir: Path, group: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One group's test correctness [M, n_test] (bool) and val accuracies [M] from `run_dir`'s evaluation."""
    results = load(task, run_dir)
    tensors, _ = load_tensors(run_dir / FOLDER / PREDICTIONS_FILE)
    rows = [i for i, m in enumerate(results["models"]) if m["group"] == group]
    val = torch.tensor([results["models"][i]["val_accuracy"] for i in rows])
    return tensors["predictions"][rows] == tensors["labels"], val


def _records(group: str, val_accuracy: torch.Tensor, test_accuracy: torch.Tensor,
             generators: list[int] | None = None) -> list[dict]:
    """One record per model; a generated model's also names the generator that drew it (0 .. G - 1)."""
    records = [{"group": group, "index": i, "val_accuracy": v, "test_accuracy": t}
               for i, (v, t) in enumerate(zip(val_accuracy.tolist(), test_accuracy.tolist(), strict=True))]
    if generators is not None:
        for record, generator in zip(records, generators, strict=True):
            record["generator"] = generator
    return records


def model_groups(task: Task, model: nn.Module, ckpts: CheckpointSet, generated: torch.Tensor,
                 normalizer: Normalizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Every group's parameter vectors in results.json order (config.BASELINES), and the baselines' settings.

    Order: original, ensemble, generated, noise@<strength> for each strength, finetune, mean_of_k, gaussian,
    interpolation (those asked for in evaluate.baselines). Each baseline draws from its own generator seeded with
    the run's seed, so the noise groups start from the same checkpoints and differ only in strength.
    """
    cfg, params = task.config.evaluate, ckpts.params
    chosen, n = set(cfg.baselines), cfg.baseline_n or len(generated)

    def rng() -> torch.Generator:
        return torch.Generator().manual_seed(task.config.seed)

    groups = {"original": params}
    if "ensemble" in chosen:
        groups["ensemble"] = weight_average(params)
    groups["generated"] = generated
    settings: dict = {"n": n}
    if "noise" in chosen:
        for strength in cfg.noise_strengths:
            groups[f"noise@{strength:g}"] = noise_added(params, normalizer, strength, n, rng())
        settings["noise_strengths"] = list(cfg.noise_strengths)
    if "finetune" in chosen:
        collect_cfg = task.config.collect
        lr = cfg.finetune_lr or collect_cfg.subset_lr
        loader = TensorLoader(task.data.train, task.config.data.batch_size, shuffle=True, generator=rng())
        groups["finetune"] = fine_tuned(model, ckpts.spec, params, loader, cfg.finetune_steps, lr, n, rng(),
                                        "adamw" if collect_cfg.recipe == "iteration" else "sgd",
                                        collect_cfg.subset_weight_decay, task.device)
        settings["finetune"] = {"steps": cfg.finetune_steps, "lr": lr}
    if "mean_of_k" in chosen:
        k = min(cfg.mean_of_k, len(params))
        if k < cfg.mean_of_k:
            log.info("evaluate: mean_of_k averages all %d checkpoints (evaluate.mean_of_k=%d > collect.k)",
                     k, cfg.mean_of_k)
        groups["mean_of_k"] = mean_of_k(params, k, n, rng())
        settings["mean_of_k"] = k
    if "gaussian" in chosen:
        groups["gaussian"] = gaussian_fit(params, n, rng())
    if "interpolation" in chosen:  # the training checkpoints stay in collection order, so rows i, i + 1 are neighbours
        groups["interpolation"] = interpolation(params, n, rng())
    return groups, settings


def decide(records: list[dict], correct: torch.Tensor, similarity: dict, standardised: torch.Tensor,
           seed: int = 0) -> dict:
    """The statistics of results.json: "resolution", "comparisons" and, with held-out checkpoints,
    "generalization" (every group, see `pdiff.stats`) and "memorization" (the held-out test of the generated
    models beside the memorization baselines, groups of equal size: `pdiff.memorization.heldout_test`).

    records: one per model (results.json order); correct [M, n_test] bool; similarity: `similarity_summary`'s;
    standardised [M, D]: every model's parameters in the normaliser's units. Comparisons: every group against
    the originals on accuracy (mean, median, val-chosen best) and novelty (median max IoU, median L2 to the
    nearest original); every baseline against the generated models on the accuracy-novelty plane.
    """
    names = [r["group"] for r in records]
    rows = {g: torch.tensor([i for i, name in enumerate(names) if name == g]) for g in dict.fromkeys(names)}
    val = torch.tensor([r["val_accuracy"] for r in records])
    iou = {g: torch.tensor(v["values"]) for g, v in similarity["max_iou_to_original"].items()}
    l2 = {g: torch.tensor(v["values"]) for g, v in similarity["distance_to_original"].items()}
    generators = {g: torch.tensor([records[i].get("generator", 0) for i in rows[g].tolist()]) for g in rows}

    def accuracy(group: str, versus: str) -> list[stats.Comparison]:
        a, b = rows[group], rows[versus]
        return stats.compare_accuracy(correct[a], val[a], correct[b], val[b], group, versus,
                                      generators=generators[group], versus_generators=generators[versus])

    def similarity_to_originals(group: str, versus: str) -> stats.Comparison:
        return stats.compare_values(iou[group], iou[versus], group, versus, "median_max_iou", seed=seed)

    comparisons = []
    for group in rows:
        if group == "original":
            continue
        comparisons += [c.as_dict() for c in accuracy(group, "original")]
        if "original" not in iou:  # one original (K = 1) has no other to be similar to
            continue
        comparisons.append(similarity_to_originals(group, "original").as_dict())
        comparisons.append(stats.compare_values(l2[group], l2["original"], group, "original",
                                                "median_l2_to_original", seed=seed).as_dict())
    for baseline in [g for g in rows if g not in ("original", "heldout", "generated")]:
        comparisons.append(stats.dominance(accuracy("generated", baseline)[0],
                                           similarity_to_originals("generated", baseline), baseline))
    decided = {"comparisons": comparisons}
    if len(rows["original"]) >= 2:  # the resolution compares two halves of the originals
        decided = {"resolution": stats.resolution(correct[rows["original"]]), **decided}
    if "heldout" in rows:
        training, heldout = standardised[rows["original"]], standardised[rows["heldout"]]
        wrong = ~correct
        decided["generalization"] = {}
        compared = [g for g in rows if g != "original"]
        size = min(len(rows[g]) - (g == "heldout") for g in compared)  # coverage grows with the models compared
        for group in compared:
            figures = memorization.generalization(standardised[rows[group]], training, heldout, seed=seed,
                                           is_heldout=group == "heldout", size=size).as_dict()
            figures["max_iou_to_training_median"] = iou[group].median().item()
            figures["max_iou_to_heldout_median"] = max_iou_to(wrong[rows[group]], wrong[rows["heldout"]],
                                                              exclude_self=group == "heldout").median().item()
            decided["generalization"][group] = figures

        def group(name: str) -> memorization.Group:
            return memorization.Group(standardised[rows[name]], correct[rows[name]], val[rows[name]],
                                      generators[name] if name == "generated" else None)

        decided["memorization"] = memorization.heldout_test(
            group("generated"), {b: group(b) for b in memorization.BASELINES if b in rows}, group("heldout"),
            training, seed)
    return decided


def collapse(records: list[dict], resolution: float) -> dict:
    """Whether generation collapsed: most generated models below the worst original by more than the resolution.

    Returns the worst original's test accuracy, the share of generated models below it by more than
    `resolution` (a fraction, like the accuracies) and `collapsed` (that share above one half).
    """
    worst = min(r["test_accuracy"] for r in records if r["group"] == "original")
    generated = [r["test_accuracy"] for r in records if r["group"] == "generated"]
    below = sum(a < worst - resolution for a in generated) / len(generated)
    return {"worst_original": worst, "resolution": resolution, "share_below": below, "collapsed": below > 0.5}


def collapse_message(figures: dict) -> str:
    """One line for the terminal and the report: what collapsed and what to try."""
    return (f"{100 * figures['share_below']:.0f}% of the generated models fall below the worst original "
            f"({100 * figures['worst_original']:.2f}%) by more than the resolution "
            f"({100 * figures['resolution']:.2f} points): generation has collapsed. Try "
            "train.autoencoder.arch=tokens with train.diffusion.arch=transformer for long vectors, more "
            "train.diffusion.steps, or a lower train.autoencoder.latent_noise")


def summarise(records: list[dict]) -> dict[str, dict]:
    """Per group: 'best' = test accuracy of the model with the best val accuracy, plus max/mean/median/min."""
    summary = {}
    for group in dict.fromkeys(r["group"] for r in records):
        rows = [r for r in records if r["group"] == group]
        val = torch.tensor([r["val_accuracy"] for r in rows])
        test = torch.tensor([r["test_accuracy"] for r in rows])
        summary[group] = {"count": len(rows), "best": test[val.argmax()].item(), "max": test.max().item(),
                          "mean": test.mean().item(), "median": test.median().item(), "min": test.min().item(),
                          "std": test.std().item() if len(rows) > 1 else 0.0,
                          "val_best": val.max().item(), "val_mean": val.mean().item(),
                          "val_median": val.median().item()}
    return summary
