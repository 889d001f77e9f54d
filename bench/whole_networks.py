"""Whole networks generated on real data: the whole-network presets end to end, each stage in its own process.

    python -m bench.whole_networks [--tasks mnist-convnet3-full mnist-mlp-full] [--data-dir DIR]
                                   [--runs-dir runs/full] [--note TEXT]

For each task, runs collect, train, generate, evaluate and report as `python -m pdiff STAGE` processes
(`bench.common.stage_in_process`), so the train stage's CPU seconds and peak resident memory are its own process's.
A stage already done in the run folder is not redone: its figures are read back from bench/whole_networks.json
(or, for a stage done by some other command, its wall seconds from its stage.json, its memory unmeasured).
Then reads results.json: the generated models' mean test accuracy against the originals' and against the
mean-of-k and Gaussian baselines (differences with their 95% CIs), the share of generated models inside the
originals' test-accuracy range (with its Wilson 95% interval) and the collapse check, how close the generated
models lie to the checkpoints (median max wrong-prediction IoU and L2 to the nearest original, against the
originals' own, with 95% CIs), and decides two targets: the mean within TARGET_POINTS of the
originals' (CI inside +-1 point: met; outside: not met; else undecided) and at least TARGET_INSIDE of the
generated models inside the range (of the n drawn: the interval says how much another draw may differ).
Writes the "whole-networks" section of BENCHMARKS.md and bench/whole_networks.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from pdiff import evaluate, stats
from pdiff.config import STAGES, load_config
from pdiff.params import ParamSpec
from pdiff.pipeline import Run
from pdiff.report import points_with_ci
from pdiff.store import load_json

from . import common
from .common import share_with_interval, table

NAME = "whole_networks"
TARGET_POINTS = 0.01  # the generated mean within 1 point of the originals' mean
TARGET_INSIDE = 0.95  # at least 95% of the generated models inside the originals' accuracy range
AVERAGES = ("mean_of_k", "gaussian")  # the baselines that average the checkpoints (or sample around their mean)
COPY = "noise@0.001"  # checkpoints plus tiny noise: the max IoU of near-copies, for scale


def measure_stages(task: str, runs_dir: Path, overrides: list[str], cached: dict) -> dict:
    """stage -> {"wall", "cpu", "rss"} (rss None when the stage was done by another command)."""
    run = Run(load_config(task, overrides), runs_dir / task, progress=False)  # to run: it may not exist yet
    figures = {}
    for stage in STAGES:
        if run.is_done(stage):
            figures[stage] = cached.get(stage) or {
                "wall": load_json(run.stage_dir(stage) / "stage.json")["seconds"], "cpu": None, "rss": None}
            continue
        print(f"{task}: {stage} ...", flush=True)
        figures[stage] = common.stage_in_process(stage, task, runs_dir, overrides)
    return figures


def target_mean(c: dict) -> str:
    """Whether the CI of generated - original mean accuracy lies within +-TARGET_POINTS."""
    if -TARGET_POINTS <= c["ci_low"] and c["ci_high"] <= TARGET_POINTS:
        return "met"
    if c["ci_high"] < -TARGET_POINTS or c["ci_low"] > TARGET_POINTS:
        return "not met"
    return "undecided"


def accuracy_figures(task: str, runs_dir: Path, overrides: list[str]) -> dict:
    """What results.json says of the generated models against the originals."""
    run = common.open_run(runs_dir / task, overrides)
    results = evaluate.load(run.task, run.root)
    test = {g: [r["test_accuracy"] for r in results["models"] if r["group"] == g] for g in ("original", "generated")}
    low, high = min(test["original"]), max(test["original"])
    mean = next(c for c in results["comparisons"] if (c["group"], c["versus"], c["metric"])
                == ("generated", "original", "mean_test_accuracy"))
    inside = sum(low <= a <= high for a in test["generated"]) / len(test["generated"])
    closeness = {c["metric"]: c for c in results["comparisons"] if (c.get("group"), c.get("versus"), c.get("metric"))
                 in {("generated", "original", "median_max_iou"), ("generated", "original", "median_l2_to_original")}}
    copies = results["similarity"]["max_iou_to_original"].get(COPY, {}).get("mean")
    correct, val = evaluate.load_correct(run.task, run.root, "generated")
    versus_baselines = {}  # does the generator do more than average the checkpoints?
    for baseline in [b for b in AVERAGES if any(r["group"] == b for r in results["models"])]:
        baseline_correct, baseline_val = evaluate.load_correct(run.task, run.root, baseline)
        versus_baselines[baseline] = stats.compare_accuracy(correct, val, baseline_correct, baseline_val, "generated",
                                                            baseline, seed=run.config.seed)[0].as_dict()
    return {"D": ParamSpec.from_dict(results["spec"]).dim, "k": len(test["original"]), "n": len(test["generated"]),
            "original_mean": sum(test["original"]) / len(test["original"]), "original_range": [low, high],
            "generated_mean": sum(test["generated"]) / len(test["generated"]),
            "generated_range": [min(test["generated"]), max(test["generated"])],
            "mean_comparison": mean, "mean_target": target_mean(mean), "inside": inside,
            "inside_target": "met" if inside >= TARGET_INSIDE else "not met",
            "versus_baselines": versus_baselines, "generated_std": statistics.stdev(test["generated"]),
            "original_std": statistics.stdev(test["original"]), "resolution": results.get("resolution"),
            "collapse": results["collapse"], "closeness": closeness, "copy_max_iou": copies,
            "arch": [run.config.train.autoencoder.arch, run.config.train.diffusion.arch]}


def minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def mib(rss: float | None) -> str:
    return "not measured" if rss is None else f"{rss:.0f}"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/full")
    parser.add_argument("--tasks", nargs="+", default=["mnist-convnet3-full", "mnist-mlp-full"])
    parser.add_argument("--note", default="", help="a line added under the tables")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Each task's stages (in child processes) and accuracy figures; bench/whole_networks.json after each task,
    keeping the earlier entries of tasks not named (and their stage figures, for stages not redone)."""
    common.set_threads(args)
    overrides = common.data_overrides(args)
    recorded = common.load_results(NAME).get("tasks", {})
    command = f"python -m bench.whole_networks --tasks {' '.join(args.tasks)}"
    figures = {}
    for task in args.tasks:
        stages = measure_stages(task, args.runs_dir, overrides, recorded.get(task, {}).get("stages", {}))
        recorded[task] = {"stages": stages, **accuracy_figures(task, args.runs_dir, overrides)}
        figures = common.results(command, order=list(args.tasks), tasks=recorded, note=args.note)
        common.save_results(NAME, figures)
    return figures


def render(results: dict) -> str:
    recorded = results["tasks"]
    tasks = [t for t in results["order"] if t in recorded]
    p = results["provenance"]
    cost = table(["task", "D", "AE / denoiser", *(f"{s} min" for s in STAGES), "train peak RSS MiB"],
                 [[t, f"{recorded[t]['D']:,}", " / ".join(recorded[t]["arch"]),
                   *(minutes(recorded[t]["stages"][s]["wall"]) for s in STAGES),
                   mib(recorded[t]["stages"]["train"]["rss"])] for t in tasks])
    quality = table(["task", "originals: mean [range] (std) %", "generated: mean [range] (std) %",
                     "generated - original mean, points [95% CI]", "within 1 point", "inside range [95% CI]",
                     f">= {TARGET_INSIDE:.0%} inside", "collapse check"],
                    [[t, f"{100 * r['original_mean']:.2f} [{100 * r['original_range'][0]:.2f}, "
                         f"{100 * r['original_range'][1]:.2f}] ({100 * r['original_std']:.2f}) (K = {r['k']})",
                      f"{100 * r['generated_mean']:.2f} [{100 * r['generated_range'][0]:.2f}, "
                      f"{100 * r['generated_range'][1]:.2f}] ({100 * r['generated_std']:.2f}) (n = {r['n']})",
                      points_with_ci(r["mean_comparison"]), r["mean_target"],
                      share_with_interval(round(r["inside"] * r["n"]), r["n"]),
                      r["inside_target"], "collapsed" if r["collapse"]["collapsed"] else
                      f"not collapsed ({100 * r['collapse']['share_below']:.0f}% below the worst original)"]
                     for t in tasks for r in [recorded[t]]])
    averages = table(["task", *(f"generated - {b} mean, points [95% CI]" for b in AVERAGES)],
                     [[t, *(f"{points_with_ci(c)}, {c['verdict']}" if (c := recorded[t]["versus_baselines"].get(b))
                            else "-" for b in AVERAGES)] for t in tasks])
    closeness = table(["task", "generated - original median max IoU [95% CI]",
                       "generated - original median L2 to the nearest original [95% CI]", f"{COPY} mean max IoU"],
                      [[t, *(f"{points_with_ci(c, 1)}, {c['verdict']}" if (c := recorded[t].get("closeness", {})
                                                                           .get(m)) else "-"
                             for m in ("median_max_iou", "median_l2_to_original")),
                        "-" if recorded[t].get("copy_max_iou") is None else f"{recorded[t]['copy_max_iou']:.3f}"]
                       for t in tasks])
    return f"""## Whole networks on real data (`python -m bench.whole_networks`)

`{p['command']}` on {common.machine(p)}
({p['cores']} cores; torch's default threads in each stage process). Each stage ran as its own
`python -m pdiff STAGE` process; minutes are wall time, peak RSS the train stage's process. Every parameter of
each network is generated; accuracies are on the MNIST test set, CIs by the two-level bootstrap of
`pdiff.stats.compare_accuracy` (models and test examples resampled). Targets: the generated mean
within 1 point of the originals' (met when the whole CI lies within +-1 point) and at least 95% of the generated
models inside the originals' test-accuracy range.

{cost}

{quality}

Against the baselines that average the checkpoints (`evaluate.baselines`): a generator that only learned the
checkpoints' mean would match them.

{averages}

How close the generated models lie to the checkpoints (`evaluate`'s similarity analysis): each model's highest
wrong-prediction IoU to any original and its L2 distance to the nearest original (per-tensor standardised
units), against the same for each original to the others. Higher IoU or lower L2: closer to the checkpoints than
they are to each other; checkpoints plus noise of 0.001 ({COPY}) show where copies sit.

{closeness}

{results['note']}"""


def expected(results: dict) -> dict:
    """task -> where it was measured and each stage's wall seconds and peak memory (MiB), which `pdiff run` prints
    before running that task's preset."""
    on = f"{results['provenance']['cores']} CPU cores"
    return {task: {"on": on, "stages": {stage: {"seconds": round(m["wall"]), "peak_mib": round(m["rss"])}
                                        for stage, m in results["tasks"][task]["stages"].items()}}
            for task in results["order"]}


def glance(results: dict) -> list[list[str]]:
    """The README's rows (question, task, finding): each whole network's generated mean against the originals'."""
    return [["Can every parameter of a network be generated?", f"{task} (D = {entry['D']:,})",
             f"mean {points_with_ci(entry['mean_comparison'], 100)} points vs the originals, "
             f"{entry['mean_comparison']['verdict']}; {100 * entry['inside']:.0f}% inside their range"]
            for task in results["order"] for entry in [results["tasks"][task]]]


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
