"""Stage 4, evaluate: the accuracy of every model of every group, their predictions and their similarity.

Groups, in results.json order: original (the K checkpoints, measured once by the collection; with
train.holdout, the K - H the generator was fitted on, then `heldout`: the H it never saw), ensemble,
generated, then the baselines (config.BASELINES), all made from the generator's training checkpoints.
Writes evaluate/results.json (one record per model, per-group summary, similarity, comparisons with
CIs) and evaluate/predictions.safetensors (test predictions [M, n_test], row i = record i); `load` reads
results.json back, checked against the config. The measuring is `evaluate_models`, which takes any model,
vectors and loaders: the stage only gathers them from the run folder and writes what it returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import collect, generate, memorization, stats, train, verdicts
from .baselines import fine_tuned, gaussian_fit, interpolation, mean_of_k, noise_added, weight_average
from .checkpoints import CheckpointSet
from .config import BASELINES
from .errors import ArtifactError, ConfigError
from .hashing import check_hash, config_hash, made_under
from .inference import Batches, accuracy, accuracy_many, labels_of, predict_many
from .layout import PREDICTIONS_FILE, RESULTS_FILE, STAGE_FOLDERS
from .params import Normalizer, ParamSpec
from .provenance import provenance
from .similarity import BLOCK_BYTES, max_iou_to, rows_of, similarity_summary
from .store import check_format_version, check_record, load_json, load_tensors, save_json, save_tensors
from .task import Task
from .tasks.datasets import TensorLoader

log = logging.getLogger(__name__)
FOLDER = STAGE_FOLDERS["evaluate"]  # runs/<task>/evaluate/
CONFIG_SECTIONS = (*generate.CONFIG_SECTIONS, "evaluate")
RESULTS_FORMAT_VERSION = 1  # of results.json; 0: written before it carried one
NO_TRAINING_BASELINES = tuple(b for b in BASELINES if b != "finetune")  # made from the checkpoints alone


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Evaluate the originals, the generated models and the baselines; write results and predictions into `out`."""
    collected = collect.load(task, run_dir)
    ckpts, heldout = train.split(task, run_dir, collected)
    generated = generate.load(task, run_dir, ckpts.spec)
    cfg, collect_cfg = task.config.evaluate, task.config.collect
    groups = {"original": ckpts, **({"heldout": heldout} if heldout is not None else {}),
              "generated": generated.params}
    finetune = FineTuning(
        TensorLoader(task.data.train, task.config.data.batch_size, shuffle=True,
                     generator=torch.Generator().manual_seed(task.config.seed)),
        cfg.finetune_steps, cfg.finetune_lr or collect_cfg.subset_lr,
        "adamw" if collect_cfg.recipe == "iteration" else "sgd", collect_cfg.subset_weight_decay)
    results, predictions = measure(
        collected.model, ckpts.spec, groups, task.loader("val"), task.loader("test"), cfg.baselines,
        finetune=finetune, baseline_n=cfg.baseline_n, noise_strengths=cfg.noise_strengths, mean_of_k=cfg.mean_of_k,
        generators=generated.generator, seed=task.config.seed, device=task.device, model_chunk=cfg.model_chunk,
        progress=task.progress)
    results = {"format_version": RESULTS_FORMAT_VERSION, "task": task.config.task,
               "config_hash": config_hash(task.config, CONFIG_SECTIONS), "seed": task.config.seed, **results,
               "provenance": provenance(task.device)}
    save_tensors(out / PREDICTIONS_FILE, {"predictions": predictions.to(torch.int16), "labels": task.labels("test")},
                 {**made_under(task.config, CONFIG_SECTIONS), "spec": ckpts.spec.to_dict()})
    save_json(out / RESULTS_FILE, results)
    return {}


@dataclass
class FineTuning:
    """The finetune baseline's training: `steps` more optimiser steps on the subset from each checkpoint, on
    shuffled training batches (x, y), with the optimiser ("sgd" or "adamw") that collected the checkpoints."""

    loader: Batches
    steps: int = 10
    lr: float = 1e-3
    optimizer: str = "sgd"
    weight_decay: float = 5e-4


def evaluate_models(model: nn.Module, spec: ParamSpec, groups: Mapping[str, torch.Tensor | CheckpointSet],
                    val_loader: Batches, test_loader: Batches, baselines: Sequence[str] = NO_TRAINING_BASELINES, *,
                    finetune: FineTuning | None = None, baseline_n: int | None = None,
                    noise_strengths: Sequence[float] = (0.001, 0.05, 0.15), mean_of_k: int = 16,
                    generators: torch.Tensor | None = None, seed: int = 0, device: torch.device | str = "cpu",
                    model_chunk: int = 50, progress: bool = False) -> dict:
    """What `pdiff evaluate` measures, for any model: every group's accuracy, the comparisons with their CIs and
    verdicts, the similarity study and the collapse check, as the dict results.json holds (`write_report` renders
    it). The collapse check warns, with the fix, when most generated models fall below the worst original.

    model: the network whose `spec` subset the vectors fill; groups: "original" (the checkpoints, [K, D] or a
    CheckpointSet, whose measured accuracies and predictions are reused), "generated" ([N, D]), optionally
    "heldout" (checkpoints the generator never saw) and any group of your own ([M, D]), each compared with the
    originals. val_loader, test_loader: (x, y) batches in a fixed order (the validation split chooses; the test
    split measures). baselines: made from the originals, each with its own generator seeded by `seed` (see
    config.BASELINES; "finetune" also needs `finetune`, the training data); baseline_n models each (None: as
    many as generated), at `noise_strengths` (standardised units) and averages of `mean_of_k` checkpoints.
    generators [N]: which trained generator drew each generated model (several: verdicts for the method).
    """
    return measure(model, spec, groups, val_loader, test_loader, baselines, finetune=finetune, baseline_n=baseline_n,
                   noise_strengths=noise_strengths, mean_of_k=mean_of_k, generators=generators, seed=seed,
                   device=device, model_chunk=model_chunk, progress=progress)[0]


def measure(model: nn.Module, spec: ParamSpec, groups: Mapping[str, torch.Tensor | CheckpointSet],
            val_loader: Batches, test_loader: Batches, baselines: Sequence[str], *, finetune: FineTuning | None,
            baseline_n: int | None, noise_strengths: Sequence[float], mean_of_k: int, generators: torch.Tensor | None,
            seed: int, device: torch.device | str, model_chunk: int, progress: bool) -> tuple[dict, torch.Tensor]:
    """`evaluate_models`'s results and every model's test predictions [M, n_test] (row i = record i)."""
    missing = [g for g in ("original", "generated") if g not in groups]
    if missing:
        raise ConfigError(f"groups has no {missing[0]!r}: give the checkpoints as groups['original'] and the "
                          "generated vectors as groups['generated'] ([N, D] tensors)")
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise ConfigError(f"baselines: unknown {unknown[0]!r}: choose from {', '.join(BASELINES)}")
    if "finetune" in baselines and finetune is None:
        raise ConfigError("baselines has 'finetune', which trains from the checkpoints: pass finetune=FineTuning("
                          "train_loader), or leave 'finetune' out")
    vectors = {g: _vectors(g, v, spec.dim) for g, v in groups.items()}
    params, generated = vectors["original"], vectors["generated"]
    # Per-tensor units, in which the noise baselines' strengths are given (the paper's), whatever standardisation
    # the generator used.
    normalizer = Normalizer.fit(params, spec)
    runs = groups["original"].runs if isinstance(groups["original"], CheckpointSet) else None
    made, settings = baseline_groups(model, spec, params, normalizer, baselines, finetune, baseline_n or len(generated),
                                     noise_strengths, mean_of_k, seed, device, runs)
    ordered = {"original": params, **{g: vectors[g] for g in ("heldout",) if g in vectors},
               **{g: made.pop(g) for g in ("ensemble",) if g in made}, "generated": generated,
               **{g: v for g, v in vectors.items() if g not in ("original", "heldout", "generated")}, **made}
    del made  # `ordered` holds the baselines now, and lets each go once measured
    test_labels = labels_of(test_loader)
    records, test_rows = [], []
    # [M, D], filled group by group: stacking the groups and standardising the stack would hold [M, D] three times
    # (whole networks: M ~ 500 models of D ~ 10^6 numbers, 2 GB each time)
    standardised = torch.empty(sum(len(rows) for rows in ordered.values()), spec.dim)
    filled = 0
    for group in list(ordered):
        rows = ordered.pop(group)
        _standardise_into(standardised[filled:filled + len(rows)], rows, normalizer)
        filled += len(rows)
        given = groups.get(group)
        if isinstance(given, CheckpointSet) and given.test_predictions is not None:  # measured by the collection
            records += _records(group, given.val_accuracy, given.test_accuracy)
            test_rows.append(given.test_predictions.long())
            continue
        val_acc = accuracy_many(model, spec, rows, val_loader, model_chunk, device,
                                desc=f"evaluate {group} (val)" if progress else None)
        test_pred = predict_many(model, spec, rows, test_loader, model_chunk, device,
                                 desc=f"evaluate {group} (test)" if progress else None)
        made_by = generators.tolist() if group == "generated" and generators is not None else None
        records += _records(group, val_acc, accuracy(test_pred, test_labels), made_by)
        test_rows.append(test_pred)
    del rows  # the last group's vectors: a baseline's, freed now
    predictions = torch.cat(test_rows)  # [M, n_test]
    names = [r["group"] for r in records]
    similarity = similarity_summary(predictions, test_labels, names, standardised)
    results = {"seed": seed, "spec": spec.to_dict(), "models": records, "summary": summarise(records),
               "baselines": settings, "similarity": similarity,
               **decide(records, predictions == test_labels, similarity, standardised, seed)}
    results["collapse"] = collapse(records, results.get("resolution", 0.0))  # no resolution with one original
    if results["collapse"]["collapsed"]:
        log.warning("evaluate: %s", collapse_message(results["collapse"]))
    return results, predictions


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


def _vectors(group: str, value: torch.Tensor | CheckpointSet, dim: int) -> torch.Tensor:
    """A group's parameter vectors [M, dim] (float32); a wrong shape is one line naming the group. Non-finite
    vectors are evaluated like any other: a broken generator's models are results too."""
    rows = value.params if isinstance(value, CheckpointSet) else value
    if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.shape[1] != dim:
        shape = tuple(rows.shape) if isinstance(rows, torch.Tensor) else type(rows).__name__
        raise ConfigError(f"groups[{group!r}] is {shape}: give [M, {dim}] parameter vectors of this spec, one row "
                          "per model")
    return rows.float()


def _standardise_into(out: torch.Tensor, rows: torch.Tensor, normalizer: Normalizer) -> None:
    """Write the vectors rows [G, D] in the normaliser's units into out [G, D], a block of rows at a time, so that
    the normaliser's temporaries never span the whole group."""
    block = max(1, BLOCK_BYTES // (4 * max(1, rows.shape[1])))
    for start in range(0, len(rows), block):
        out[start:start + block] = normalizer.normalize(rows[start:start + block])


def _records(group: str, val_accuracy: torch.Tensor, test_accuracy: torch.Tensor,
             generators: list[int] | None = None) -> list[dict]:
    """One record per model; a generated model's also names the generator that drew it (0 .. G - 1)."""
    records = [{"group": group, "index": i, "val_accuracy": v, "test_accuracy": t}
               for i, (v, t) in enumerate(zip(val_accuracy.tolist(), test_accuracy.tolist(), strict=True))]
    if generators is not None:
        for record, generator in zip(records, generators, strict=True):
            record["generator"] = generator
    return records


def baseline_groups(model: nn.Module, spec: ParamSpec, params: torch.Tensor, normalizer: Normalizer,
                    baselines: Sequence[str], finetune: FineTuning | None, n: int, noise_strengths: Sequence[float],
                    k: int, seed: int, device: torch.device | str, runs: torch.Tensor | None = None,
                    ) -> tuple[dict[str, torch.Tensor], dict]:
    """The baselines' parameter vectors, made from the checkpoints `params` [K, D], in results.json order
    (config.BASELINES), and their settings.

    Order: ensemble, noise@<strength> for each strength, finetune, mean_of_k, gaussian, interpolation (those in
    `baselines`), n models each (the ensemble is one). Each baseline draws from its own generator seeded with
    `seed`, so the noise groups start from the same checkpoints and differ only in strength. runs [K]: the training
    run of each checkpoint (collect.runs), which keeps each interpolation along one run.
    """
    chosen = set(baselines)

    def rng() -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    groups = {}
    if "ensemble" in chosen:
        groups["ensemble"] = weight_average(params)
    settings: dict = {"n": n}
    if "noise" in chosen:
        for strength in noise_strengths:
            groups[f"noise@{strength:g}"] = noise_added(params, normalizer, strength, n, rng())
        settings["noise_strengths"] = list(noise_strengths)
    if "finetune" in chosen:
        groups["finetune"] = fine_tuned(model, spec, params, finetune.loader, finetune.steps, finetune.lr, n, rng(),
                                        finetune.optimizer, finetune.weight_decay, device)
        settings["finetune"] = {"steps": finetune.steps, "lr": finetune.lr}
    if "mean_of_k" in chosen:
        used = min(k, len(params))
        if used < k:
            log.info("evaluate: mean_of_k averages all %d checkpoints (evaluate.mean_of_k=%d > collect.k)", used, k)
        groups["mean_of_k"] = mean_of_k(params, used, n, rng())
        settings["mean_of_k"] = used
    if "gaussian" in chosen:
        groups["gaussian"] = gaussian_fit(params, n, rng())
    if "interpolation" in chosen:  # the training checkpoints stay in collection order, so rows i, i + 1 are neighbours
        groups["interpolation"] = interpolation(params, n, rng(), runs)
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
        return stats.compare_values(iou[group], iou[versus], group, versus, "median_max_iou", seed=seed,
                                    generators=generators[group])

    comparisons = []
    for group in rows:
        if group == "original":
            continue
        comparisons += [c.as_dict() for c in accuracy(group, "original")]
        if "original" not in iou:  # one original (K = 1) has no other to be similar to
            continue
        comparisons.append(similarity_to_originals(group, "original").as_dict())
        comparisons.append(stats.compare_values(l2[group], l2["original"], group, "original",
                                                "median_l2_to_original", seed=seed,
                                                generators=generators[group]).as_dict())
    for baseline in [g for g in rows if g not in ("original", "heldout", "generated")]:
        comparisons.append(verdicts.dominance(accuracy("generated", baseline)[0],
                                           similarity_to_originals("generated", baseline), baseline))
    decided = {"comparisons": comparisons}
    if len(rows["original"]) >= 2:  # the resolution compares two halves of the originals
        decided = {"resolution": stats.resolution(correct[rows["original"]]), **decided}
    if "heldout" in rows:
        # views, not copies, of the groups' rows: each is [G, D]
        training, heldout = rows_of(standardised, rows["original"]), rows_of(standardised, rows["heldout"])
        wrong = ~correct
        decided["generalization"] = {}
        compared = [g for g in rows if g != "original"]
        size = min(len(rows[g]) - (g == "heldout") for g in compared)  # coverage grows with the models compared
        for group in compared:
            figures = memorization.generalization(rows_of(standardised, rows[group]), training, heldout, seed=seed,
                                           is_heldout=group == "heldout", size=size).as_dict()
            figures["max_iou_to_training_median"] = iou[group].median().item()
            figures["max_iou_to_heldout_median"] = max_iou_to(wrong[rows[group]], wrong[rows["heldout"]],
                                                              exclude_self=group == "heldout").median().item()
            decided["generalization"][group] = figures

        def group(name: str) -> memorization.Group:
            return memorization.Group(rows_of(standardised, rows[name]), correct[rows[name]], val[rows[name]],
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
