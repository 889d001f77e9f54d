"""What p-diff does on a task as a method: one run with several trained generators, its verdicts at method scope.

    python -m bench.seeds [--task mnist1d-convnet] [--generators 1 5]

For each count G, in increasing order, runs the whole pipeline with train.generators=G in RUNS_DIR (`pdiff run
TASK train.generators=G --force train` after the first: the generators already trained are kept). Generator s
of a run is the one a single-generator run with train.seed = seed + s trains, so G = 1 is the plain run. The
comparisons of the generated models with the originals and with every baseline come from
evaluate/results.json: with G >= 2 their mean-accuracy CIs hold the spread between trained generators (scope
"method", docs/statistics.md), with G = 1 they speak for one generator. The train stage's seconds (from its
stage.json) show what each generator costs. Writes bench/seeds.json and the "seeds" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json

from pdiff.config import STAGES
from pdiff.pipeline import run_pipeline
from pdiff.presets import load_config
from pdiff.words import dominance_words, points_with_ci, scope_words

from . import common

NAME = "seeds"


def run_figures(generators: int, results: dict, seconds: dict[str, float]) -> dict:
    """One run's figures: its generated-vs-other comparisons (as results.json records them), the groups' mean
    test accuracy, the test set's resolution and the stages' seconds."""
    comparisons = [c for c in results["comparisons"] if "generated" in (c["group"], c["versus"])
                   and c["metric"] in ("mean_test_accuracy", "median_max_iou", "dominance")]
    means = {group: s["mean"] for group, s in results["summary"].items()}
    return {"generators": generators, "comparisons": comparisons, "means": means,
            "resolution": results.get("resolution"), "seconds": seconds}


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench-seeds")
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--generators", nargs="*", type=int, default=[1, 5])
    return parser


def measure(args: argparse.Namespace) -> dict:
    common.set_threads(args)
    runs, trained = [], 0
    for generators in sorted(args.generators):  # one folder: each count trains only the generators it adds
        config = load_config(args.task, [f"train.generators={generators}", *common.data_overrides(args)])
        run = run_pipeline(config, args.runs_dir, progress=False, force="train" if trained else None)
        results = json.loads((run.stage_dir("evaluate") / "results.json").read_text())
        seconds = {stage: json.loads((run.stage_dir(stage) / "stage.json").read_text())["seconds"]
                   for stage in STAGES}
        runs.append({**run_figures(generators, results, seconds), "trained": generators - trained})
        trained = generators
    return common.results(f"python -m bench.seeds --task {args.task} --generators "
                          f"{' '.join(map(str, args.generators))}", task=args.task, runs=runs)


def comparison_row(c: dict, generators: int) -> list:
    if c["metric"] == "dominance":  # the baseline's record: generated is the subject of the sentence
        return [generators, f"{c['group']} (accuracy-novelty plane)", "", dominance_words(c),
                scope_words(c, generators)]
    metric = "mean test accuracy, points" if c["metric"] == "mean_test_accuracy" else "median max IoU"
    text = points_with_ci(c) if c["metric"] == "mean_test_accuracy" else points_with_ci(c, 1)
    return [generators, f"{c['versus']}: {metric}", text, c["verdict"], scope_words(c, generators)]


def render(results: dict) -> str:
    p = results["provenance"]
    rows = [comparison_row(c, r["generators"]) for r in results["runs"] for c in r["comparisons"]]
    timing = [[r["generators"], r["trained"], f"{r['seconds']['train']:.0f}",
               f"{r['seconds']['train'] / r['trained']:.0f}", f"{100 * r['means']['original']:.2f}",
               f"{100 * r['means']['generated']:.2f}", f"±{100 * r['resolution']:.2f}"] for r in results["runs"]]
    return f"""## p-diff as a method on {results['task']} (`python -m bench.seeds`)

`{p['command']}` ({common.hardware(p)}). Each row compares the generated models with the originals or a baseline
on the task's test set: difference with its 95% CI and verdict (`pdiff.stats`, docs/statistics.md), and what the
CI speaks for. With several generators the mean-accuracy CI and the similarity CI (median max wrong-prediction
IoU to the originals) hold the spread between trained generators (scope column). Dominance lines combine the
two (docs/statistics.md, "Claims and the accuracy-novelty plane"); lines marked "(earlier rule)" were decided
before that rule, with three words and no accuracy margin ("dominates": accuracy CI not below 0, similarity lower).

{common.table(["generators", "versus", "generated - versus [95% CI]", "verdict", "scope"], rows)}

The counts run in one folder, in increasing order: each trains only the generators it adds (the others are
kept). The train stage's wall seconds (its stage.json) and per generator trained, the groups' mean test accuracy
(%) and the test set's resolution (half-width of the CI between two halves of the originals):

{common.table(["generators", "trained", "train s", "s per generator", "original mean", "generated mean",
               "resolution"], timing)}"""


def glance(results: dict) -> list[list[str]]:
    """The README's rows (question, task, finding) from the run with the most generators: the generated models'
    mean test accuracy against the originals' (for p-diff as a method) and where they sit among the baselines."""
    run = max(results["runs"], key=lambda r: r["generators"])
    task = f"{results['task']}, {run['generators']} generators"
    mean = next(c for c in run["comparisons"] if c["metric"] == "mean_test_accuracy" and c["versus"] == "original")
    by_verdict: dict[str, list[dict]] = {}
    for c in run["comparisons"]:
        if c["metric"] == "dominance":
            by_verdict.setdefault(c["verdict"], []).append(c)
    plane = [dominance_words(records) for records in by_verdict.values()]
    method = all(c.get("scope") == "method" for records in by_verdict.values() for c in records)
    plane_task = task if method else f"{results['task']}, the models of {run['generators']} generators, pooled"
    return [["Are the generated models as accurate as the checkpoints?", task,
             f"{points_with_ci(mean, 100)} points, {mean['verdict']}"],
            ["Do they beat simpler ways to make models (accuracy-novelty plane)?", plane_task, "; ".join(plane)]]


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
