"""Ablations: variants of one task's config, each taken through the pipeline, compared in one table.

A study (k, location, noise, steps) turns a list of values into variants; variant `label` is its own
run folder runs/<task>/ablation/<study>/<label>/. Work is reused wherever it gives the same files:
- a stage whose config hash equals the main run's (runs/<task>/) is adopted from it (hard links);
- a K variant takes the first K of the main collection: both recipes save a prefix of one trajectory;
- a location variant starts from the main run's base model (collect reuses a base with its base_hash).
The runner (`pdiff.pipeline`) keeps every variant's folder; this module only says what to reuse.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
from omegaconf import OmegaConf

from . import collect, distributed, evaluate, stats
from .config import STAGES, Config, validate
from .diffusion import SAMPLERS
from .errors import ConfigError
from .figures import save_figure
from .hashing import base_hash
from .layout import BASE_FILE
from .params import NORM_LAYERS, ParamSpec
from .pipeline import Run, adopt, lock, run_pipeline, run_stage, run_stages, stage_hash
from .presets import to_dict
from .render import Section, render_html, render_markdown
from .store import check_record, load_json, load_tensors, save_json, save_text
from .task import Task
from .words import points_with_ci

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

log = logging.getLogger(__name__)
STUDIES = ("k", "location", "noise", "steps")
PAPER_K = (1, 10, 50, 200, 500)
NOISE = {"none": (False, False), "input": (True, False), "latent": (False, True), "both": (True, True)}
FEW_STEPS = (10, 20, 50, 100)  # DDIM steps compared against the full DDPM chain


@dataclass
class Variant:
    label: str  # folder name and table row
    overrides: dict[str, Any]  # dotted config key -> value, on top of the main config


def ablate(config: Config, study: str, values: list[str] | None = None, runs_dir: str | Path = "runs",
           progress: bool = True, shared: dict[str, Any] | None = None) -> Path:
    """Run every variant of `study` (default values: the paper's, scaled to the task); returns report.md.

    `shared`: overrides for every variant but not the main run, e.g. {"evaluate.baselines": []} to evaluate
    only each variant's generated models (the comparisons with the main run need nothing else).
    """
    if study not in STUDIES:
        raise ConfigError(f"unknown study {study!r}: choose one of {', '.join(STUDIES)}")
    variants = study_variants(config, study, values)
    main = run_pipeline(config, runs_dir, progress=progress)
    study_dir = main.root / "ablation" / study
    rows = []
    for variant in variants:
        log.info("ablate %s: variant %s %s", study, variant.label, variant.overrides)
        run = Run(with_overrides(config, {**(shared or {}), **variant.overrides}), study_dir / variant.label, progress)
        with lock(run):
            reuse_file = run.root / "reuse.json"  # what was reused when the variant was first run
            reused = check_record(reuse_file, load_json(reuse_file), {}, f"delete {reuse_file.name}"
                                  ) if reuse_file.is_file() else {}
            copied = reuse(main, run)
            reused.update(copied)
            if not run.is_done("collect") and _same_base(main, run):
                collect_from_base(main, run)
                reused["collect"] = "base model of the main run (subset collected anew)"
            save_json(reuse_file, reused)
            run_stages(run, keep_finished=False)  # a variant follows the main run, whose work is kept
        rows.append(_row(variant, run, reused, ran=[s for s in run.seconds if s not in copied]))
        rows[-1]["versus_main"] = versus_main(main, run, variant.label)
    report = study_dir / "report.md"
    if distributed.is_main_process():  # the report reads back the figures it writes
        save_json(study_dir / "ablation.json", {"task": config.task, "study": study, "variants": rows})
        write_ablation_report(study_dir, config.task, study, rows)
    distributed.wait_for_everyone()
    return report


def study_variants(config: Config, study: str, values: list[str] | None = None) -> list[Variant]:
    """The variants of a study: the given values, or the paper's scaled to what the task has; each has a folder
    of its own (`distinct_labels`)."""
    return distinct_labels(_variants(config, study, values))


def distinct_labels(variants: list[Variant]) -> list[Variant]:
    """Refuse two values that ask for one variant; give values that differ but map to one folder name
    (`layer.*` and `layer?` both read `layer`) labels told apart by a digest of their overrides.

    One folder per label: two variants sharing one would overwrite each other, and recompute both on every rerun.
    """
    settings = [json.dumps(v.overrides, sort_keys=True) for v in variants]
    for i, setting in enumerate(settings):
        if setting in settings[:i]:
            raise ConfigError(f"two values ask for the same variant {variants[i].label!r} "
                              f"({variants[i].overrides}): give each value once")
    labels = [v.label for v in variants]
    return [v if labels.count(v.label) == 1 else
            Variant(f"{v.label}-{hashlib.sha256(setting.encode()).hexdigest()[:6]}", v.overrides)
            for v, setting in zip(variants, settings, strict=True)]


def _variants(config: Config, study: str, values: list[str] | None) -> list[Variant]:
    if study == "k":
        if config.collect.from_ is not None:
            raise ConfigError("--study k takes the first K of pdiff's own collection, and collect.from reads your "
                              "checkpoints instead: compare K by runs whose collect.from globs match fewer files")
        collected = config.collect.k
        not_whole = [v for v in values or () if not v.isdigit()]
        if not_whole:
            raise ConfigError(f"K value {not_whole[0]!r} is not a whole number: give the K values to compare as "
                              f"numbers in 1..{collected}, e.g. 10 50")
        ks = [int(v) for v in values] if values else sorted({k for k in PAPER_K if k <= collected} | {collected})
        too_many = [k for k in ks if k > collected or k < 1]
        if too_many:
            raise ConfigError(f"K={too_many[0]} is not within the {collected} checkpoints collected: choose "
                              f"1..{collected} or collect more with collect.k={max(ks)}")
        return [Variant(f"k{k}", {"collect.k": k}) for k in ks]
    if study == "location":
        if values:
            task = Task(config)
            model = task.adapt(task.new_model())
            chosen: dict[tuple[str, ...], str] = {}
            for value in values:  # a pattern that matches nothing fails here, before the main run
                names = ParamSpec.select(model, value.split(",")).names
                if names in chosen and chosen[names] != value:
                    raise ConfigError(f"locations {chosen[names]!r} and {value!r} select the same parameters: "
                                      "give one of them")
                chosen[names] = value
            return [Variant(_slug(v), {"collect.subset": v.split(",")}) for v in values]
        return norm_pair_variants(config)
    if study == "noise":
        unknown = [v for v in values or () if v not in NOISE]
        if unknown:
            raise ConfigError(f"noise variant {unknown[0]!r}: choose from {', '.join(NOISE)}")
        ae = config.train.autoencoder
        return [Variant(v, {"train.autoencoder.input_noise": ae.input_noise if NOISE[v][0] else 0.0,
                            "train.autoencoder.latent_noise": ae.latent_noise if NOISE[v][1] else 0.0})
                for v in values or NOISE]
    total = config.train.diffusion.num_train_timesteps
    values = values or [f"ddpm-{total}", *(f"ddim-{n}" for n in FEW_STEPS)]
    variants = []
    for value in values:
        sampler, _, steps = value.partition("-")
        if sampler not in SAMPLERS or not steps.isdigit() or not 0 < int(steps) <= total:
            raise ConfigError(f"steps variant {value!r}: write SAMPLER-STEPS with SAMPLER ddpm, ddim or dpm and "
                              f"1..{total} steps, e.g. ddim-50")
        full = sampler == "ddpm" and int(steps) == total  # the plain config: steps=None means the whole chain
        variants.append(Variant(value, {"generate.sampler": sampler, "generate.steps": None if full else int(steps)}))
    return variants


def norm_pair_variants(config: Config) -> list[Variant]:
    """Pairs of consecutive normalization layers, first to last; the pair the config selects keeps its subset."""
    task = Task(config)
    model = task.adapt(task.new_model())
    chosen = ParamSpec.select(model, config.collect.subset).names
    layers = [name for name, m in model.named_modules()
              if isinstance(m, NORM_LAYERS) and any(True for _ in m.parameters(recurse=False))]
    if not layers:
        raise ConfigError(f"{config.model.name} has no normalization layer with parameters: give the locations "
                          "to compare as values, e.g. 'head.*'")
    pairs = [layers[i:i + 2] for i in range(max(1, len(layers) - 1))]
    variants = []
    for pair in pairs:
        first = layers.index(pair[0]) + 1
        label = f"norm{first}-{first + len(pair) - 1}"
        subset = [f"{name}.*" for name in pair]
        same = ParamSpec.select(model, subset).names == chosen
        variants.append(Variant(label, {"collect.subset": list(config.collect.subset) if same else subset}))
    return variants


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """A copy of `config` with dotted keys set to new values, validated."""
    node = OmegaConf.structured(config)
    for key, value in overrides.items():
        OmegaConf.update(node, key, value, merge=False)
    variant: Config = OmegaConf.to_object(node)
    validate(variant)
    return variant


# ---- reuse ----------------------------------------------------------------------------------------
def reuse(main: Run, run: Run) -> dict[str, str]:
    """Complete `run`'s stages by copying `main`'s files where that gives the same files; returns {stage: how}."""
    reused = {}
    for stage in STAGES:
        if run.is_done(stage) or stage_hash(main.config, stage) != stage_hash(run.config, stage):
            break
        adopt(run, stage, main)
        reused[stage] = "adopted from the main run"
    if "collect" in reused or run.is_done("collect"):
        return reused
    k, main_k = run.config.collect.k, main.config.collect.k
    if _differs_only_in(main.config, run.config, "collect", "k") and k <= main_k:
        run_stage(run, "collect", entry=lambda out: collect.first_k(run.task, main.root, out))
        reused["collect"] = f"first {k} of the main run's {main_k} checkpoints"
    return reused


def collect_from_base(main: Run, run: Run) -> None:
    """Run `run`'s collect stage starting from the main run's base model (no base training)."""
    base = main.path("collect", BASE_FILE)

    def entry(out: Path) -> dict:
        return collect.run(run.task, run.root, out, base=base)

    run_stage(run, "collect", entry=entry)


def _same_base(main: Run, run: Run) -> bool:
    """Whether the main run's base model was trained exactly as `run`'s config asks."""
    meta = load_tensors(main.path("collect", BASE_FILE))[1]
    return meta.get("base_hash") == base_hash(run.config) and run.task.made_from_this_data(meta.get("data"))


def _differs_only_in(a: Config, b: Config, section: str, key: str) -> bool:
    da, db = to_dict(a), to_dict(b)
    da[section].pop(key), db[section].pop(key)
    return da == db


def _slug(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", value).strip("_.") or "variant"


def _row(variant: Variant, run: Run, reused: dict[str, str], ran: list[str]) -> dict:
    results = evaluate.load(run.task, run.root)
    max_iou = results["similarity"]["max_iou_to_original"]
    return {"label": variant.label, "overrides": variant.overrides, "run_dir": str(run.root),
            "ran": ran, "reused": reused, "seconds": run.seconds,
            "summary": {g: results["summary"][g] for g in ("original", "generated")},
            "max_iou": {g: max_iou[g] for g in ("original", "generated") if g in max_iou},
            "generated_accuracy": [m["test_accuracy"] for m in results["models"] if m["group"] == "generated"]}


def versus_main(main: Run, run: Run, label: str) -> list[dict]:
    """The variant's generated models against the main run's: mean, median and val-chosen best test accuracy,
    each with its 95% CI and verdict (`pdiff.stats.compare_accuracy`; both runs share the test set)."""
    correct, val = evaluate.load_correct(run.task, run.root, "generated")
    main_correct, main_val = evaluate.load_correct(main.task, main.root, "generated")
    return [c.as_dict() for c in stats.compare_accuracy(correct, val, main_correct, main_val, label, "main run",
                                                        seed=run.config.seed)]


# ---- the study's report ---------------------------------------------------------------------------
def ablation_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The paper's ablation columns (generated best / mean / median, in %) plus our val-chosen best and IoU."""
    header = ["variant", "max", "mean", "median", "best (val)", "original mean", "max IoU generated",
              "max IoU original", "mean - main run [95% CI]", "verdict"]
    table = []
    for row in rows:
        g, o = row["summary"]["generated"], row["summary"]["original"]
        iou = [f"{row['max_iou'][group]['mean']:.3f}" if group in row["max_iou"] else "-"
               for group in ("generated", "original")]
        mean = next(c for c in row["versus_main"] if c["metric"] == "mean_test_accuracy")
        table.append([row["label"], *(f"{100 * g[c]:.2f}" for c in ("max", "mean", "median", "best")),
                      f"{100 * o['mean']:.2f}", *iou, points_with_ci(mean), mean["verdict"]])
    return header, table


def write_ablation_report(study_dir: Path, task: str, study: str, rows: list[dict]) -> Path:
    """Table, figures, report.md and report.html of one study; returns report.md's path."""
    header, table = ablation_table(rows)
    plot_variant_accuracy(rows, study_dir / "accuracy.png")
    plot_variant_similarity(rows, study_dir / "max_similarity.png")
    plot_similarity_scatter(rows, study_dir / "accuracy_vs_similarity.png")
    reuse_rows = [[r["label"], ", ".join(f"{k}={v}" for k, v in r["overrides"].items()), ", ".join(r["ran"]) or "none",
                   "; ".join(f"{s}: {how}" for s, how in r["reused"].items()) or "-"] for r in rows]
    sections = [
        Section("Test accuracy of generated models (%)", header=header, rows=table,
                text=f"Study `{study}` of task `{task}`. *max*, *mean*, *median* are the paper's best / avg. / "
                     "median over the generated models; *best (val)* is the test accuracy of the generated model "
                     "with the highest validation accuracy; *max IoU generated* is the mean over generated models "
                     "of their max wrong-prediction IoU to any original checkpoint, *max IoU original* the same "
                     "for each original against the other originals. *mean - main run*: the variant's generated "
                     "mean test accuracy minus the main run's, in points, with its 95% CI (variance components of "
                     "test examples and models, docs/statistics.md) and the verdict it supports."),
        Section("Accuracy and similarity per variant", figures=["accuracy.png", "max_similarity.png",
                                                                 "accuracy_vs_similarity.png"]),
        Section("Variants", header=["variant", "overrides", "stages run by this call", "reused"], rows=reuse_rows,
                text="Each variant is a run folder beside this report; reused work was hard-linked or sliced "
                     "from the main run, never recomputed."),
    ]
    title = f"p-diff ablation: {study} ({task})"
    save_text(study_dir / "report.md", render_markdown(title, sections))
    save_text(study_dir / "report.html", render_html(title, sections, study_dir))
    return study_dir / "report.md"


def plot_variant_accuracy(rows: list[dict], path: Path) -> None:
    """Generated models' test accuracies per variant (box), with the originals' mean (x)."""
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    labels = [r["label"] for r in rows]
    ax.boxplot([[100 * a for a in r["generated_accuracy"]] for r in rows], showfliers=True)
    ax.scatter(range(1, len(rows) + 1), [100 * r["summary"]["original"]["mean"] for r in rows], marker="x",
               color="tab:blue", zorder=3, label="original mean")
    ax.set_xticks(range(1, len(rows) + 1), labels)
    ax.set(xlabel="variant", ylabel="generated test accuracy (%)")
    ax.legend()
    save_figure(fig, path)


def plot_variant_similarity(rows: list[dict], path: Path) -> None:
    """Each generated model's max IoU to any original, per variant (box)."""
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(rows)), 4))
    ax.boxplot([r["max_iou"]["generated"]["values"] for r in rows], showfliers=True)
    ax.set_xticks(range(1, len(rows) + 1), [r["label"] for r in rows])
    ax.set(xlabel="variant", ylabel="max IoU to any original")
    save_figure(fig, path)


def plot_similarity_scatter(rows: list[dict], path: Path) -> None:
    """Accuracy against max similarity of every generated model, one colour per variant (the paper's K figure)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        ax.scatter(r["max_iou"]["generated"]["values"], [100 * a for a in r["generated_accuracy"]], s=12,
                   alpha=0.6, label=r["label"])
    ax.set(xlabel="max IoU of wrong predictions to any original", ylabel="test accuracy (%)")
    ax.legend()
    save_figure(fig, path)
