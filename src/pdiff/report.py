"""Stage 5, report: tables and figures of one run, as report.md and a self-contained report.html.

Both files are rendered from the same list of sections, so they always say the same thing; the
HTML embeds its figures (base64 PNG) and opens offline in any browser. The memorization study
(does p-diff make new models or copies of its checkpoints?) gets a table of every group's accuracy,
similarity and distance to the originals, the accuracy vs similarity scatter, IoU bars, a t-SNE of
autoencoder latents and, given several runs' results, max similarity against the number of checkpoints K.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import distributed, evaluate, generate, verdicts
from .config import STAGES
from .figures import (
    plot_accuracy_histogram,
    plot_accuracy_vs_similarity,
    plot_forest,
    plot_generalization,
    plot_iou_bars,
    plot_similarity_vs_k,
    plot_tsne,
)
from .layout import STAGE_FILE, STAGE_FOLDERS, stage_folder
from .params import ParamSpec
from .presets import to_dict
from .render import Section, render_html, render_markdown
from .store import load_record, save_text
from .task import Task
from .words import points_with_ci, summary_in_words, verdict_lines

FOLDER = STAGE_FOLDERS["report"]  # runs/<task>/report/
CONFIG_SECTIONS = evaluate.CONFIG_SECTIONS  # the report reads what evaluate wrote and depends on nothing more
ACCURACY_COLUMNS = ("best", "max", "mean", "median", "min")


def run(task: Task, run_dir: Path, out: Path) -> dict:
    """Write the report of `run_dir`'s evaluation into `out` (the main process alone: it only writes files)."""
    if not distributed.is_main_process():
        return {}
    results = evaluate.load(task, run_dir)
    seconds = {stage: load_record(stage_folder(run_dir, stage) / STAGE_FILE, {"seconds": (int, float)},
                                  f"rerun `pdiff {stage} --force`")["seconds"] for stage in STAGES[:-1]}
    generated = generate.load(task, run_dir, ParamSpec.from_dict(results["spec"]))
    # latents of different generators live in different spaces: the checkpoints' are generator 0's
    latents = {"original": generated.original_latents.numpy(),
               "generated": generated.latents[generated.generator == 0].numpy()}
    if len(generated.heldout_latents):
        latents["heldout"] = generated.heldout_latents.numpy()
    write_report(results, out, to_dict(task.config), seconds, latents=latents, conditioning=generated.conditioning)
    return {}


def accuracy_table(summary: dict[str, dict], split: str = "test", comparisons: list[dict] | None = None
                   ) -> tuple[list[str], list[list[str]]]:
    """Rows of best/max/mean/median/min accuracy (in %) per group, for 'test' or 'val'; given the comparisons of
    results.json, two more columns: the mean's difference to the originals with its 95% CI, and the verdict."""
    mean_vs_original = {c["group"]: c for c in comparisons or [] if c["metric"] == "mean_test_accuracy"
                        and c["versus"] == "original"}
    header = ["group", "models", *ACCURACY_COLUMNS] + (["mean - original [95% CI]", "verdict"] if comparisons else [])
    rows = []
    for group, s in summary.items():
        if split == "test":
            values = [s[c] for c in ACCURACY_COLUMNS]
        else:
            values = [s["val_best"], s["val_best"], s["val_mean"], s["val_median"], float("nan")]
        row = [group, str(s["count"]), *(f"{100 * v:.2f}" if v == v else "" for v in values)]
        if comparisons:
            c = mean_vs_original.get(group)
            row += [points_with_ci(c), c["verdict"]] if c else ["", ""]
        rows.append(row)
    return header, rows


# What each verdict of the generated models against the originals says, in words
def generalization_table(generalization: dict) -> tuple[list[str], list[list[str]]]:
    """One row per group: memorization ratio, coverage of the held-out checkpoints with its CI, max IoUs."""
    header = ["group", "memorization ratio (median)", "coverage [95% CI]", "max IoU to training (median)",
              "max IoU to held-out (median)"]
    rows = [[group, f"{g['memorization_ratio_median']:.2f}",
             f"{g['coverage']:.2f} [{g['coverage_ci_low']:.2f}, {g['coverage_ci_high']:.2f}]",
             f"{g['max_iou_to_training_median']:.3f}", f"{g['max_iou_to_heldout_median']:.3f}"]
            for group, g in generalization.items()]
    return header, rows


def heldout_test_table(record: dict) -> tuple[list[str], list[list[str]]]:
    """results.json["memorization"] as rows: the held-out checkpoints themselves, the generated models, then each
    baseline with generated minus it on the memorization ratio and on mean test accuracy (points), with CIs."""
    header = ["group", "models", "memorization ratio (median)", "ratio: generated - group", "coverage [95% CI]",
              "mean test acc: generated - group (points)"]

    def row(name: str, figures: dict) -> list[str]:
        compared = figures.get("comparisons", {})
        return [name, str(figures["models"]), f"{figures['memorization_ratio_median']:.2f}",
                points_with_ci(compared["median_memorization_ratio"], 1) if compared else "",
                f"{figures['coverage']:.2f} [{figures['coverage_ci_low']:.2f}, {figures['coverage_ci_high']:.2f}]",
                points_with_ci(compared["mean_test_accuracy"]) if compared else ""]

    return header, [row("heldout", record["reference"]), row("generated", record["generated"]),
                    *(row(name, figures) for name, figures in record["baselines"].items())]


def heldout_test_text(record: dict) -> str:
    """What the held-out test's table shows and how to read it."""
    return (f"The generated models and the simpler explanations of them (averages of checkpoints, a Gaussian fit, "
            f"interpolations between neighbouring checkpoints: those this run evaluated) in the same held-out test, "
            f"{record['models_per_group']} models per group (coverage: that of {record['coverage_size']}, as the "
            f"{record['heldout_checkpoints']} held-out checkpoints cover each other leave-one-out; the `heldout` row, "
            "each held-out checkpoint against the others). Generated models "
            "beat a baseline on held-out closeness at equal accuracy when *generated - group* is above 0 on the "
            "memorization ratio (nearer the unseen checkpoints, relative to the seen ones) while their accuracy is "
            f"non-inferior (CI lower end above -{100 * verdicts.ACCURACY_MARGIN:.2f} points). Differences with their "
            "95% CI.")


def write_report(results: dict, out_dir: str | Path, config: dict | None = None,
                 seconds: dict[str, float] | None = None, latents: dict[str, np.ndarray] | None = None,
                 runs: list[dict] | None = None, conditioning: dict | None = None) -> Path:
    """Write figures, report.md and report.html for one run's results.json, or `evaluate_models`'s results;
    returns report.md's path.

    `config` (the run's, as a dict) adds the setup and the config; `seconds` (stage -> seconds) the time per
    stage; `latents` (group -> autoencoder latents [n, d], e.g. original and generated) the t-SNE; `runs`, the
    results.json of several runs of the task with different K, max similarity vs K; `conditioning` (the generate
    stage's target, target_accuracy and guidance) the target beside the accuracy achieved.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, similarity = results["summary"], results["similarity"]
    subset = (f"the subset {', '.join(config['collect']['subset'])}" if config else
              f"a subset of {ParamSpec.from_dict(results['spec']).dim} numbers")
    counts = (f"{summary['original']['count']} checkpoints of {subset}; {summary['generated']['count']} generated "
              "models")
    sections = [Section("Setup", text=f"Task `{results['task']}`: {config.get('description', '')} "
                        f"Seed {config['seed']}; {counts} ({config['generate']['sampler']} sampler)."
                        if config else f"Seed {results.get('seed', 0)}; {counts}.")]
    if results.get("collapse", {}).get("collapsed"):
        sections.append(Section("Collapse", text=evaluate.collapse_message(results["collapse"]) + "."))
    comparisons = results.get("comparisons")
    if comparisons:
        plot_forest(comparisons, out_dir / "forest.png")
        words = summary_in_words(results)
        resolution = (f"This test set resolves differences of about ±{100 * results['resolution']:.2f} points (the "
                      "half-width of the 95% CI of the mean-accuracy difference between two halves of the "
                      "originals). " if "resolution" in results else "")  # one original (K = 1) has no halves
        sections.append(Section(
            "Verdicts", figures=["forest.png"],
            text=(f"{words}\n\n" if words else "") + resolution + "Each line: difference to the reference group "
                 "with its 95% CI and the verdict it supports, and what the CI speaks for: this generator's models "
                 "(test examples and models resampled), or the method (several trained generators). The mean's CI "
                 "counts the model, example and interaction variance once each; the median and the val-chosen best "
                 "are descriptive (no calibrated CI exists for them here). Each verdict answers its own question: "
                 "with many comparisons in one run, some will read 'higher' or 'lower' by chance (no "
                 "family-wise control).\n\n"
                 + "\n".join(f"- {line}" for line in verdict_lines(results))))
    if conditioning:
        header, rows = conditioning_table(results, conditioning)
        sections.append(Section("Target accuracy (%)", header=header, rows=rows, text=conditioning_text(
            results, conditioning)))
    header, rows = accuracy_table(summary, "test", comparisons)
    sections.append(Section(
        "Test accuracy (%)", header=header, rows=rows,
        text="*best* is the test accuracy of the model with the highest validation accuracy (nothing is chosen "
             "on the test set); *max* is the test-set maximum, the paper's 'best'. The ensemble is the uniform "
             "weight average of all checkpoints."))
    header, rows = accuracy_table(summary, "val")
    sections.append(Section("Validation accuracy (%)", header=header[:-1], rows=[r[:-1] for r in rows]))

    plot_accuracy_histogram(results["models"], out_dir / "accuracy_hist.png")
    plot_accuracy_vs_similarity(results["models"], similarity, out_dir / "accuracy_vs_similarity.png")
    plot_iou_bars(similarity["mean_iou"], out_dir / "iou_bars.png")
    header, rows = memorization_table(results)
    sections.append(Section(
        "Memorization: new models or copies?", header=header, rows=rows, figures=["accuracy_vs_similarity.png"],
        text="IoU = |W1 ∩ W2| / |W1 ∪ W2| over the test examples each model gets wrong. *max IoU* is each model's "
             "highest IoU to any original (for originals: to any other original), *L2* its distance to the "
             "nearest original in per-tensor standardised units (for originals: to the nearest other one, the "
             "spread among checkpoints); both are means over the group. A group that copies checkpoints sits "
             "at max IoU near 1; one that generalises reaches the originals' accuracy at lower similarity. "
             + baseline_text(results.get("baselines", {}), summary)))
    if "generalization" in results:
        plot_generalization(results["generalization"], out_dir / "generalization.png")
        header, rows = generalization_table(results["generalization"])
        sections.append(Section(
            "Generalization to held-out checkpoints", header=header, rows=rows, figures=["generalization.png"],
            text="The generator never saw the `heldout` checkpoints. *Memorization ratio*: each model's distance "
                 "to its nearest training checkpoint over its distance to the nearest held-out one (standardised "
                 "units; median over the group): near 0 for copies of training checkpoints, about 1 for new draws "
                 "of the process that made the checkpoints. *Coverage*: the fraction of held-out checkpoints whose "
                 "nearest model of the group is closer than their nearest training checkpoint. Copies of training "
                 "checkpoints give coverage near 0; a generator that learned the distribution covers held-out "
                 "checkpoints about as well as the held-out checkpoints cover each other (the `heldout` row, "
                 "leave-one-out)."))
    if "memorization" in results:
        header, rows = heldout_test_table(results["memorization"])
        sections.append(Section("Held-out test beside the simpler explanations", header=header, rows=rows,
                                text=heldout_test_text(results["memorization"])))
    sections.append(Section("Accuracy distributions", figures=["accuracy_hist.png"]))
    sim_rows = [[pair, f"{v:.3f}"] for pair, v in similarity["mean_iou"].items()]
    sections.append(Section("Mean IoU within and between groups", header=["pair", "IoU"], rows=sim_rows,
                            figures=["iou_bars.png"]))
    if latents is not None:
        plot_tsne(latents, out_dir / "tsne.png", seed=results.get("seed", 0))
        sections.append(Section("t-SNE of autoencoder latents", figures=["tsne.png"],
                                text="The originals' parameters encoded by the trained autoencoder (no noise) and "
                                     "the generated models' latents, embedded together in 2-D by t-SNE."))
    if runs and len({r["summary"]["original"]["count"] for r in runs}) > 1:
        plot_similarity_vs_k(runs, out_dir / "similarity_vs_k.png")
        sections.append(Section("Max similarity vs number of checkpoints K", figures=["similarity_vs_k.png"],
                                text="Mean over each group of every model's max IoU to the originals, one run per K."))
    if seconds:
        sections.append(Section("Time per stage (s)", header=list(seconds),
                                rows=[[f"{v:.1f}" if v is not None else "" for v in seconds.values()]]))
    if config:
        sections.append(Section("Config", text="```json\n" + json.dumps(config, indent=2) + "\n```"))

    title = f"p-diff report: {results['task']}" if "task" in results else "p-diff report"
    save_text(out_dir / "report.md", render_markdown(title, sections))
    save_text(out_dir / "report.html", render_html(title, sections, out_dir))
    return out_dir / "report.md"


def conditioning_table(results: dict, conditioning: dict) -> tuple[list[str], list[list[str]]]:
    """The validation accuracy asked for beside the validation and test accuracy of the generated and original
    models (mean, median, val-chosen best)."""
    summary = results["summary"]
    rows = [[f"target ({conditioning['target']})", f"{100 * conditioning['target_accuracy']:.2f}", ""]]
    for group in ("generated", "original"):
        s = summary[group]
        rows += [[f"{group} mean", f"{100 * s['val_mean']:.2f}", f"{100 * s['mean']:.2f}"],
                 [f"{group} median", f"{100 * s['val_median']:.2f}", f"{100 * s['median']:.2f}"],
                 [f"{group} best (val-chosen)", f"{100 * s['val_best']:.2f}", f"{100 * s['best']:.2f}"]]
    return ["", "val accuracy", "test accuracy"], rows


def conditioning_text(results: dict, conditioning: dict) -> str:
    """What was asked for, and how many generated models reached it on validation."""
    val = [m["val_accuracy"] for m in results["models"] if m["group"] == "generated"]
    reached = sum(v >= conditioning["target_accuracy"] - 1e-9 for v in val)
    return (f"The generator is conditioned on validation accuracy (`train.diffusion.condition=accuracy`) and was "
            f"asked for `generate.target={conditioning['target']}`, {100 * conditioning['target_accuracy']:.2f}% "
            f"validation accuracy, with classifier-free guidance w = {conditioning['guidance']:g}: {reached} of "
            f"{len(val)} generated models reach it on validation. Whether the generated models beat the originals "
            "beyond chance is in the Verdicts section (test set).")


def memorization_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """One row per group: models, mean and best test accuracy, mean IoU within, max IoU and L2 to originals."""
    summary, sim = results["summary"], results["similarity"]
    distances = sim.get("distance_to_original", {})
    header = ["group", "models", "mean acc %", "best acc %", "IoU within", "max IoU to originals",
              "L2 to nearest original"]
    rows = []
    for group, s in summary.items():
        within = sim["mean_iou"].get(f"{group}-{group}")
        max_iou = sim["max_iou_to_original"].get(group, {}).get("mean")
        distance = distances.get(group, {}).get("mean")
        rows.append([group, str(s["count"]), f"{100 * s['mean']:.2f}", f"{100 * s['best']:.2f}",
                     *(f"{v:.3f}" if v is not None else "" for v in (within, max_iou, distance))])
    return header, rows


def baseline_text(settings: dict, groups: dict | list = ()) -> str:
    """What each baseline group is, with the settings this run used (`groups`: the groups evaluated)."""
    parts = ["Baselines: *ensemble* is the uniform average of all checkpoints"]
    if "noise_strengths" in settings:
        parts.append("*noise@s* are checkpoints plus N(0, s²) noise in standardised units")
    if "finetune" in settings:
        parts.append(f"*finetune* are checkpoints trained {settings['finetune']['steps']} more steps "
                     f"(lr {settings['finetune']['lr']:g})")
    if "mean_of_k" in settings:
        parts.append(f"*mean_of_k* are averages of {settings['mean_of_k']} random checkpoints")
    parts.append("*gaussian* are samples of a per-coordinate Gaussian fitted to the checkpoints")
    if "interpolation" in groups:
        parts.append("*interpolation* are random convex combinations of two neighbouring checkpoints")
    return "; ".join(parts) + f" ({settings.get('n', '?')} models each)."
