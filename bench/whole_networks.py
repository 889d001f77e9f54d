"""Whole networks generated on real data: the whole-network presets end to end, each stage in its own process.

    python -m bench.whole_networks [--tasks mnist-convnet3-full mnist-mlp-full] [--data-dir DIR]
                                   [--runs-dir runs/full] [--note TEXT] [KEY=VALUE ...]

For each task, runs collect, train, generate, evaluate and report as `python -m pdiff STAGE` processes
(`bench.common.stage_in_process`), so the train stage's CPU seconds and peak resident memory are its own process's.
KEY=VALUE overrides apply to every task (a fresh draw: another train.seed and generate.n=300); the entry is
recorded under the task's name followed by them. A stage already done in the run folder is not redone: its
figures are read back from bench/whole_networks.json (or, for a stage done by some other command, its wall
seconds from its stage.json, its memory unmeasured).
Then decides the two targets on VALIDATION accuracy (they chose the presets; the test set is only reported):
the generated mean within TARGET_POINTS of the originals' (the CI of the difference of mean val accuracy, from
the models' val predictions, inside +-1 point: met; outside: not met; else undecided), and at least
TARGET_INSIDE of the generated models inside the originals' val-accuracy range, which holds only when the
lower end of the share's Wilson 95% interval reaches it (another draw of as many models may differ by the
interval). The same figures on the test set, the mean against the mean-of-k and Gaussian baselines, the
collapse check and how close the generated models lie to the checkpoints (median max wrong-prediction IoU and
L2 to the nearest original, against the originals' own, with 95% CIs) are reported.
Writes the "whole-networks" section of BENCHMARKS.md and bench/whole_networks.json.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from pdiff import evaluate, generate, stats
from pdiff.collect import load as load_collected  # the stage's loader (pdiff.collect is the function)
from pdiff.config import STAGES
from pdiff.inference import predict_many
from pdiff.params import ParamSpec
from pdiff.pipeline import Run
from pdiff.train import split
from pdiff.words import points_with_ci

from . import common
from .common import share_with_interval, table, wilson

NAME = "whole_networks"
TARGET_POINTS = 0.01  # the generated mean within 1 point of the originals' mean
TARGET_INSIDE = 0.95  # at least 95% of the generated models inside the originals' accuracy range
AVERAGES = ("mean_of_k", "gaussian")  # the baselines that average the checkpoints (or sample around their mean)
COPY = "noise@0.001"  # checkpoints plus tiny noise: the max IoU of near-copies, for scale


def target_mean(c: dict) -> str:
    """Whether the CI of generated - original mean accuracy lies within +-TARGET_POINTS."""
    if -TARGET_POINTS <= c["ci_low"] and c["ci_high"] <= TARGET_POINTS:
        return "met"
    if c["ci_high"] < -TARGET_POINTS or c["ci_low"] > TARGET_POINTS:
        return "not met"
    return "undecided"


def inside_share(accuracies: list[float], low: float, high: float, split: str) -> dict:
    """How many of `accuracies` lie in [low, high], with the share's Wilson 95% interval."""
    count, n = sum(low <= a <= high for a in accuracies), len(accuracies)
    interval = wilson(count, n)
    return {"split": split, "count": count, "n": n, "low": interval[0], "high": interval[1]}


def target_inside(share: dict) -> str:
    """Whether at least TARGET_INSIDE of the models lie inside the range, by the lower end of the share's interval."""
    return "holds" if share["low"] >= TARGET_INSIDE else "does not hold"


def val_correct(run: Run) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Whether each original and each generated model is right on each validation example ({group: [M, n_val]},
    bool; results.json keeps only their val accuracies), and which generator drew each generated model [N]."""
    collected = load_collected(run.task, run.root)
    originals, _ = split(run.task, run.root, collected)
    generated = generate.load(run.task, run.root, originals.spec)
    labels = run.task.labels("val")
    correct = {group: predict_many(collected.model, originals.spec, vectors, run.task.loader("val"),
                                   run.config.evaluate.model_chunk, run.task.device) == labels
               for group, vectors in (("original", originals.params), ("generated", generated.params))}
    return correct, generated.generator


def accuracy_figures(task: str, runs_dir: Path, overrides: list[str]) -> dict:
    """What the run says of the generated models against the originals: the targets on validation, the rest on
    test."""
    run = common.open_run(runs_dir / task, overrides)
    results = evaluate.load(run.task, run.root)
    acc = {(g, split): [r[f"{split}_accuracy"] for r in results["models"] if r["group"] == g]
           for g in ("original", "generated") for split in ("val", "test")}
    inside = {split: inside_share(acc["generated", split], min(acc["original", split]), max(acc["original", split]),
                                  split) for split in ("val", "test")}
    correct, generators = val_correct(run)
    val_mean = stats.compare_accuracy(correct["generated"], correct["generated"].float().mean(1),
                                      correct["original"], correct["original"].float().mean(1), "generated",
                                      generators=generators)[0].as_dict()
    mean = {"val": {**val_mean, "metric": "mean_val_accuracy"},
            "test": next(c for c in results["comparisons"] if (c["group"], c["versus"], c["metric"])
                         == ("generated", "original", "mean_test_accuracy"))}
    test = {g: acc[g, "test"] for g in ("original", "generated")}
    closeness = {c["metric"]: c for c in results["comparisons"] if (c.get("group"), c.get("versus"), c.get("metric"))
                 in {("generated", "original", "median_max_iou"), ("generated", "original", "median_l2_to_original")}}
    copies = results["similarity"]["max_iou_to_original"].get(COPY, {}).get("mean")
    test_correct, val = evaluate.load_correct(run.task, run.root, "generated")
    versus_baselines = {}  # does the generator do more than average the checkpoints?
    for baseline in [b for b in AVERAGES if any(r["group"] == b for r in results["models"])]:
        baseline_correct, baseline_val = evaluate.load_correct(run.task, run.root, baseline)
        versus_baselines[baseline] = stats.compare_accuracy(test_correct, val, baseline_correct, baseline_val,
                                                            "generated", baseline, seed=run.config.seed)[0].as_dict()
    return {"task": task, "D": ParamSpec.from_dict(results["spec"]).dim, "k": len(test["original"]),
            "n": len(test["generated"]), "original_mean": sum(test["original"]) / len(test["original"]),
            "original_range": [min(test["original"]), max(test["original"])],
            "generated_mean": sum(test["generated"]) / len(test["generated"]),
            "generated_range": [min(test["generated"]), max(test["generated"])],
            "mean": mean, "mean_target": {"split": "val", "verdict": target_mean(mean["val"])},
            "inside": inside, "inside_target": {"split": "val", "verdict": target_inside(inside["val"])},
            "versus_baselines": versus_baselines, "generated_std": statistics.stdev(test["generated"]),
            "original_std": statistics.stdev(test["original"]), "resolution": results.get("resolution"),
            "collapse": results["collapse"], "closeness": closeness, "copy_max_iou": copies,
            "arch": [run.config.train.autoencoder.arch, run.config.train.diffusion.arch]}


def share(figures: dict) -> str:
    return share_with_interval(figures["count"], figures["n"])


def inside_words(task: str, r: dict) -> str:
    """The inside target in a sentence, from the numbers: holds or not, on which split, by the interval's end."""
    inside, target = r["inside"][r["inside_target"]["split"]], r["inside_target"]
    return (f"{task}: {inside['count']} of {inside['n']} generated models inside the originals' {target['split']} "
            f"range, lower end of the interval {100 * inside['low']:.1f}%: the {TARGET_INSIDE:.0%} target "
            f"{target['verdict']}.")


def minutes(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 60:.1f}"


def mib(rss: float | None) -> str:
    return "not measured" if rss is None else f"{rss:.0f}"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/full")
    parser.add_argument("--tasks", nargs="+", default=["mnist-convnet3-full", "mnist-mlp-full"])
    parser.add_argument("--note", default="", help="a line added under the tables")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides of every task (e.g. a fresh draw: "
                        "train.seed=1 generate.n=300)")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Each task's stages (in child processes) and accuracy figures; bench/whole_networks.json after each task,
    keeping the earlier entries of tasks not named (and their stage figures, for stages not redone)."""
    common.set_threads(args)
    overrides = [*args.overrides, *common.data_overrides(args)]
    recorded = common.load_results(NAME)
    tasks, order = recorded.get("tasks", {}), recorded.get("order", [])
    command = " ".join(["python -m bench.whole_networks --tasks", *args.tasks, *args.overrides])
    figures = {}
    for task in args.tasks:
        label = " ".join([task, *args.overrides])  # a fresh draw is an entry of its own beside the first
        stages = common.measure_stages(task, args.runs_dir / task, args.runs_dir, overrides,
                                       tasks.get(label, {}).get("stages", {}))
        tasks[label] = {"stages": stages, "command": command, **accuracy_figures(task, args.runs_dir, overrides)}
        order = [*order, label] if label not in order else order
        figures = common.results(command, order=order, tasks=tasks, note=args.note)
        common.save_results(NAME, figures)
    return figures


def render(results: dict) -> str:
    recorded = results["tasks"]
    tasks = [t for t in results["order"] if t in recorded]
    p = results["provenance"]
    cost = table(["task", "D", "AE / denoiser", *(f"{s} min" for s in STAGES), "train peak RSS MiB",
                  "evaluate peak RSS MiB"],
                 [[t, f"{recorded[t]['D']:,}", " / ".join(recorded[t]["arch"]),
                   *(minutes(recorded[t]["stages"][s]["wall"]) for s in STAGES),
                   *(mib(recorded[t]["stages"][s]["rss"]) for s in ("train", "evaluate"))] for t in tasks])
    judged = table(["task", "judged on", "generated - original mean, points [95% CI]", "within 1 point",
                    "inside the originals' range [95% CI]", f">= {TARGET_INSIDE:.0%} inside (lower end)"],
                   [[t, r["inside_target"]["split"], points_with_ci(r["mean"][r["mean_target"]["split"]]),
                     r["mean_target"]["verdict"], share(r["inside"][r["inside_target"]["split"]]),
                     r["inside_target"]["verdict"]] for t in tasks for r in [recorded[t]]])
    reported = table(["task", "originals: mean [range] (std) %", "generated: mean [range] (std) %",
                      "generated - original mean, points [95% CI]", "inside range [95% CI]", "collapse check"],
                     [[t, f"{100 * r['original_mean']:.2f} [{100 * r['original_range'][0]:.2f}, "
                          f"{100 * r['original_range'][1]:.2f}] ({100 * r['original_std']:.2f}) (K = {r['k']})",
                       f"{100 * r['generated_mean']:.2f} [{100 * r['generated_range'][0]:.2f}, "
                       f"{100 * r['generated_range'][1]:.2f}] ({100 * r['generated_std']:.2f}) (n = {r['n']})",
                       points_with_ci(r["mean"]["test"]), share(r["inside"]["test"]),
                       "collapsed" if r["collapse"]["collapsed"] else
                       f"not collapsed ({100 * r['collapse']['share_below']:.0f}% below the worst original)"]
                      for t in tasks for r in [recorded[t]]])
    words = " ".join(inside_words(t, recorded[t]) for t in tasks)
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
`python -m pdiff STAGE` process; minutes are wall time, peak RSS that of the stage's process. Every parameter of
each network is generated. The targets are judged on the MNIST validation split (they chose the presets): the
generated mean within 1 point of the originals' (met when the whole CI lies within +-1 point; CIs by
`pdiff.stats.compare_accuracy`) and at least 95% of the generated models inside the originals' accuracy range,
which holds only when the lower end of the share's Wilson 95% interval reaches 95% (another draw of as many
models may differ by the interval). A row judged on test was measured before the targets moved to validation.

{cost}

{judged}

{words}

The test set, reported only:

{reported}

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
    before running that task's preset: entries of the preset as it is (a draw with overrides is not the preset)."""
    on = f"{results['provenance']['cores']} CPU cores"
    return {task: {"on": on, "stages": {stage: {"seconds": round(m["wall"]), "peak_mib": round(m["rss"])}
                                        for stage, m in results["tasks"][task]["stages"].items()}}
            for task in results["order"] if " " not in task}


def glance(results: dict) -> list[list[str]]:
    """The README's rows (question, task, finding): each whole network's generated mean test accuracy against the
    originals', and the share of generated models inside the originals' range with the target's verdict. A row
    judged on test is left to BENCHMARKS where a row of the same preset is judged on validation."""
    on_val = {task.split()[0] for task, entry in results["tasks"].items() if entry["inside_target"]["split"] == "val"}
    rows = []
    for task in results["order"]:
        entry = results["tasks"][task]
        if entry["inside_target"]["split"] == "test" and task.split()[0] in on_val:
            continue
        mean, split = entry["mean"]["test"], entry["inside_target"]["split"]
        inside = entry["inside"][split]
        rows.append(["Can every parameter of a network be generated?", f"{task} (D = {entry['D']:,})",
                     f"test mean {points_with_ci(mean, 100)} points vs the originals, {mean['verdict']}; "
                     f"{inside['count']} of {inside['n']} inside the originals' {split} range "
                     f"[{100 * inside['low']:.1f}, {100 * inside['high']:.1f}]%: the target "
                     f"{entry['inside_target']['verdict']}"])
    return rows


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
