"""The pipeline issue's accuracy goal over several seeds, for the preset and for variants of it.

    python -m bench.seeds [--task mnist1d-convnet] [--seeds 0 1 2 3 4] [--variant collect.subset_lr=0.003 ...]

Runs the whole pipeline (`pdiff run TASK seed=S`, each seed retrains the base model and recollects) for
every seed, once as the preset and once per --variant (space-separated key=value overrides in one string),
in RUNS_DIR/<label>/seed<S>; finished runs are read back, not redone. Each row says whether the
generated models' val-chosen best test accuracy (the test accuracy of the model with the best validation
accuracy) is not lower than the originals' and their mean is within 0.5 points, each decided by the run's own
95% CI (evaluate/results.json "comparisons", `pdiff.stats`). Writes bench/seeds.json and the "seeds" section of
BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json

from pdiff.config import STAGES, load_config
from pdiff.pipeline import run_pipeline
from pdiff.report import points_with_ci

from . import common

NAME = "seeds"


def goal_figures(label: str, seed: int, results: dict, seconds: float) -> dict:
    """One run's figures: original / generated mean and val-chosen best, their comparisons (differences with 95%
    CIs and verdicts), the test set's resolution and the stages' seconds."""
    versus = {c["metric"]: c for c in results["comparisons"]
              if c["group"] == "generated" and c["versus"] == "original"}
    return {"label": label, "seed": seed, "original": results["summary"]["original"],
            "generated": results["summary"]["generated"], "mean": versus["mean_test_accuracy"],
            "best": versus["best_val_chosen_test_accuracy"], "resolution": results["resolution"], "seconds": seconds}


def goal_row(r: dict) -> list:
    """One table row, with whether each part of the goal is met by the CI (best: not `lower`; mean: CI above
    -0.5 points)."""
    o, g, mean, best = r["original"], r["generated"], r["mean"], r["best"]
    met = {"best": best["verdict"] != "lower", "mean": mean["ci_low"] >= -0.005}
    return [r["label"], r["seed"], f"{100 * o['mean']:.2f} / {100 * g['mean']:.2f}", points_with_ci(mean),
            mean["verdict"], f"{100 * o['best']:.2f} / {100 * g['best']:.2f}", points_with_ci(best), best["verdict"],
            f"±{100 * r['resolution']:.2f}", *("yes" if met[k] else "no" for k in ("best", "mean")),
            f"{r['seconds']:.0f}"]


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench-seeds")
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--variant", action="append", default=[], help="overrides, e.g. 'collect.subset_lr=0.003'")
    return parser


def measure(args: argparse.Namespace) -> dict:
    common.set_threads(args)
    rows = []
    for overrides in ["", *args.variant]:
        label = "preset" + (f" + {overrides}" if overrides else "")
        for seed in args.seeds:
            config = load_config(args.task, [*overrides.split(), f"seed={seed}", *common.data_overrides(args)])
            run = run_pipeline(config, args.runs_dir / (overrides.replace(" ", ",") or "preset") / f"seed{seed}",
                               progress=False)
            results = json.loads((run.stage_dir("evaluate") / "results.json").read_text())
            seconds = sum(json.loads((run.stage_dir(stage) / "stage.json").read_text())["seconds"] for stage in STAGES)
            rows.append(goal_figures(label, seed, results, seconds))
            print(*goal_row(rows[-1]), flush=True)
    variants = "".join(f" --variant '{v}'" for v in args.variant)
    return common.results(f"python -m bench.seeds --task {args.task} --seeds {' '.join(map(str, args.seeds))}"
                          f"{variants}", task=args.task, rows=rows)


def render(results: dict) -> str:
    header = ["config", "seed", "mean: original / generated", "generated - original mean [95% CI]", "verdict",
              "best (val-chosen): original / generated", "difference [95% CI]", "verdict", "resolution",
              "best met", "mean met", "stages s"]
    p = results["provenance"]
    return f"""## The accuracy goal over seeds (`python -m bench.seeds`)

`{p['command']}` ({common.hardware(p)}).
Each seed is a whole `pdiff run` (base training, collection, generator, {results['task']} preset otherwise); test
accuracy in %, original / generated; differences in points with the run's 95% CI (two-level paired bootstrap
over test examples and models, `pdiff.stats`) and its verdict; *resolution*: the half-width of the CI of a
mean difference between two groups of originals on this test set. The goal (pipeline issue), decided by the
CIs: the generated val-chosen best is not lower than the originals' and the generated mean's CI lies above
the originals' mean - 0.5 points. *stages s*: the five stages' wall seconds as recorded in their stage.json files
when each run was made (a rerun reads finished runs back).

{common.table(header, [goal_row(r) for r in results["rows"]])}"""


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
