"""The pipeline issue's accuracy goal over several seeds, for the preset and for variants of it.

    python -m bench.seeds [--task mnist1d-convnet] [--seeds 0 1 2 3 4] [--variant collect.subset_lr=0.003 ...]

Runs the whole pipeline (`pdiff run TASK seed=S`, each seed retrains the base model and recollects) for
every seed, once as the preset and once per --variant (space-separated key=value overrides in one string),
in RUNS_DIR/<label>/seed<S>; finished runs are read back, not redone. Each row says whether the
generated models' best test accuracy reaches the originals' best (val-chosen: the test accuracy of the
model with the best validation accuracy; max: the test-set maximum) and their mean is within 0.5 points.
Writes the "seeds" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pdiff.config import STAGES, load_config
from pdiff.pipeline import run_pipeline

from .markdown import hardware, table, write_section


def goal_row(label: str, seed: int, summary: dict, seconds: float) -> list:
    """One table row: original / generated for each statistic, whether each part of the goal is met."""
    o, g = summary["original"], summary["generated"]
    met = {"best": g["best"] >= o["best"], "max": g["max"] >= o["max"], "mean": g["mean"] >= o["mean"] - 0.005}
    return [label, seed, *(f"{100 * o[k]:.2f} / {100 * g[k]:.2f}" for k in ("best", "max", "mean", "std")),
            *("yes" if met[k] else "no" for k in ("best", "max", "mean")), f"{seconds:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--variant", action="append", default=[], help="overrides, e.g. 'collect.subset_lr=0.003'")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench-seeds"))
    args = parser.parse_args()
    rows = []
    for overrides in ["", *args.variant]:
        label = "preset" + (f" + {overrides}" if overrides else "")
        for seed in args.seeds:
            config = load_config(args.task, [*overrides.split(), f"seed={seed}"])
            run = run_pipeline(config, args.runs_dir / (overrides.replace(" ", ",") or "preset") / f"seed{seed}",
                               progress=False)
            summary = json.loads((run.stage_dir("evaluate") / "results.json").read_text())["summary"]
            seconds = sum(json.loads((run.stage_dir(stage) / "stage.json").read_text())["seconds"] for stage in STAGES)
            rows.append(goal_row(label, seed, summary, seconds))
            print(*rows[-1], flush=True)
    header = ["config", "seed", "best (val-chosen): original / generated", "max", "mean", "std",
              "best met", "max met", "mean met", "stages s"]
    write_section("seeds", f"""## The accuracy goal over seeds (`python -m bench.seeds`)

`python -m bench.seeds --task {args.task} --seeds {' '.join(map(str, args.seeds))}{''.join(
        f" --variant '{v}'" for v in args.variant)}` ({hardware()}).
Each seed is a whole `pdiff run` (base training, collection, generator, {args.task} preset otherwise); test
accuracy in %, original / generated. The goal (pipeline issue): generated best >= original best and generated
mean >= original mean - 0.5. *stages s*: the five stages' wall seconds as recorded in their stage.json files
when each run was made (a rerun reads finished runs back).

{table(header, rows)}
""")


if __name__ == "__main__":
    main()
