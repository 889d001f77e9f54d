"""The paper's ablations on a CPU task: K, parameter location, noise augmentation, sampling steps.

    python -m bench.ablations [--task mnist1d-convnet] [--studies k location noise steps] [--runs-dir runs/bench]

Runs `pdiff ablate TASK --study S` for each study (default values; finished variants are read back, not
redone; variants evaluate only their generated models, which is all the table compares). Writes
bench/ablations.json and the "ablations" section of BENCHMARKS.md. Each study's figures are in
RUNS_DIR/TASK/ablation/STUDY/report.html.
"""

from __future__ import annotations

import argparse
import json

from pdiff.ablation import STUDIES, ablate, ablation_table
from pdiff.presets import load_config

from . import common

NAME = "ablations"
ONLY_GENERATED = {"evaluate.baselines": []}  # variants: the table compares generated models only


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench")
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--studies", nargs="*", default=list(STUDIES))
    return parser


def measure(args: argparse.Namespace) -> dict:
    """Each study's variant rows (`ablation.json`'s "variants") and the main run's test-set resolution."""
    common.set_threads(args)
    config = load_config(args.task, common.data_overrides(args))
    studies = {}
    for study in args.studies:
        report = ablate(config, study, runs_dir=args.runs_dir, progress=False, shared=ONLY_GENERATED)
        studies[study] = json.loads((report.parent / "ablation.json").read_text())["variants"]
    resolution = json.loads((args.runs_dir / args.task / "evaluate" / "results.json").read_text())["resolution"]
    return common.results(f"python -m bench.ablations --task {args.task} --studies {' '.join(args.studies)}",
                          task=args.task, studies=studies, resolution=resolution)


def render(results: dict) -> str:
    task = results["task"]
    body = "\n\n".join(f"**{study}** (`pdiff ablate {task} --study {study}`)\n\n"
                        f"{common.table(*ablation_table(rows))}" for study, rows in results["studies"].items())
    p = results["provenance"]
    return f"""## Ablations of {task} (`python -m bench.ablations`)

`{p['command']}` ({common.hardware(p)}). Test accuracy (%)
of the generated models: *max* / *mean* / *median* are the paper's best / avg. / median, *best (val)* the test
accuracy of the generated model with the best validation accuracy, *original mean* the checkpoints' mean;
*max IoU generated*: the mean over generated models of their max wrong-prediction IoU to any original, *max IoU
original* the same for each original against the others. The preset's own value of each study is its main run.
*mean - main run*: the variant's generated mean test accuracy minus the main run's, in points, with its 95% CI
(two-level paired bootstrap over test examples and models, `pdiff.stats`) and verdict; the test set resolves
about ±{100 * results['resolution']:.2f} points between two groups of originals.

{body}"""


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
