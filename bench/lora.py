"""Generated LoRA adapters against the collected ones and the baselines (mnist-vit-lora).

    python -m bench.lora [--task mnist-vit-lora] [--data-dir DIR] [--threads 1]

Runs the task's whole pipeline in RUNS_DIR: a small ViT trained on upright MNIST digits, rank-4 LoRA adapters on
its attention trained on the digits turned a quarter turn (mnist-rot90), K adapter checkpoints collected and
generated. The comparisons of the generated adapters with the collected ones and with every baseline come from
evaluate/results.json (differences with 95% CIs and verdicts, docs/statistics.md); beside them, the test accuracy
of the ViT without its adapters (all adapter numbers zero: the upright model on turned digits), which says how much
the adapters carry. Writes bench/lora.json and the "lora" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json

import torch

from pdiff.collect import load
from pdiff.config import STAGES
from pdiff.inference import accuracy, predict_many
from pdiff.pipeline import Run, run_pipeline
from pdiff.presets import load_config
from pdiff.words import dominance_words, points_with_ci

from . import common

NAME = "lora"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench-lora")
    parser.add_argument("--task", default="mnist-vit-lora")
    return parser


def measure(args: argparse.Namespace) -> dict:
    common.set_threads(args)
    config = load_config(args.task, common.data_overrides(args))
    run_pipeline(config, args.runs_dir, progress=False)
    run = common.open_run(args.runs_dir / config.task, common.data_overrides(args))
    results = json.loads((run.stage_dir("evaluate") / "results.json").read_text())
    collected = load(run.task, run.root)
    spec = collected.checkpoints.spec
    without = predict_many(collected.model, spec, torch.zeros(1, spec.dim), run.task.loader("test"))
    seconds = {stage: json.loads((run.stage_dir(stage) / "stage.json").read_text())["seconds"] for stage in STAGES}
    comparisons = [c for c in results["comparisons"] if "generated" in (c["group"], c["versus"])
                   and c["metric"] == "mean_test_accuracy"]
    plane = [c for c in results["comparisons"] if c["metric"] == "dominance"]  # generated against each baseline
    return common.results(f"python -m bench.lora --task {args.task}", task=args.task, dim=spec.dim,
                          description=config.description, k=config.collect.k, n=config.generate.n,
                          without_adapters=float(accuracy(without, run.task.labels("test"))[0]),
                          summary=results["summary"], comparisons=comparisons, plane=plane,
                          resolution=results.get("resolution"), health=health_of(run),
                          seconds=seconds)


def health_of(run: Run) -> str:
    """The train stage's health check in words: how much of how the collected adapters differ from their mean the
    autoencoder's reconstructions keep (near 0: every generated adapter is their average)."""
    health = json.loads((run.stage_dir("train") / "stage.json").read_text()).get("health") or {}
    kept = health.get("differences_kept")
    return ("not recorded" if kept is None else
            f"the reconstructions keep {100 * kept:.0f}% of how the collected adapters differ from their mean")


def render(results: dict) -> str:
    p = results["provenance"]
    groups = [[group, f"{100 * s['mean']:.2f}", f"{100 * s['max']:.2f}", f"{100 * s['min']:.2f}"]
              for group, s in results["summary"].items()]
    rows = [[c["versus"] if c["group"] == "generated" else c["group"], points_with_ci(c), c["verdict"]]
            for c in results["comparisons"]]
    rows += [[c["group"], points_with_ci(c["accuracy"]), f"{dominance_words(c)} (max IoU to the collected: "
              f"{points_with_ci(c['similarity'], 1)})"] for c in results.get("plane", [])]
    stages = ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in results["seconds"].items())
    return f"""## Generated LoRA adapters on {results['task']} (`python -m bench.lora`)

`{p['command']}` ({common.hardware(p)}, 1-minute load average {p['load_at_start']:.1f} at the start; each stage's
wall seconds: {stages}). {results['description']}
The {results['k']} collected adapters (`original`) and {results['n']} generated ones, each loaded into the same
trained ViT; every group's test accuracy (%) on the turned digits. Without its adapters (every adapter number zero)
the ViT reaches {100 * results['without_adapters']:.2f}%: what the groups reach above that, the adapters carry.

{common.table(["group", "mean", "max", "min"], groups)}

The generated adapters against each group: the difference of mean test accuracy in points with its 95% CI and
verdict (`pdiff.stats`, docs/statistics.md; the test set's resolution is ±{100 * results['resolution']:.2f} points);
against each baseline, also the place on the accuracy-novelty plane (generated minus baseline median max
wrong-prediction IoU to the collected adapters, 95% CI). The CIs speak for this one trained generator's adapters.
The generator's health check: {results.get('health', 'not recorded')}.

{common.table(["generated versus", "difference [95% CI]", "verdict"], rows)}"""


def glance(results: dict) -> list[list[str]]:
    """The README's row (question, task, finding): the generated adapters' mean test accuracy against the
    collected ones', and their places on the accuracy-novelty plane."""
    mean = next(c for c in results["comparisons"] if c["versus"] == "original")
    by_verdict: dict[str, list[dict]] = {}
    for c in results.get("plane", []):
        by_verdict.setdefault(c["verdict"], []).append(c)
    return [["Can it generate LoRA adapters?", f"{results['task']}, one generator",
             f"{points_with_ci(mean)} points vs the collected adapters, {mean['verdict']}; "
             + "; ".join(dominance_words(records) for records in by_verdict.values())]]


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
