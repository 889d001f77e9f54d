"""Evaluating 200 parameter vectors: split + vmap (`predict_many`) against one model at a time.

    python -m bench.evaluation [--models 200] [--repeats 3] [--data-dir /work/shared/data] [--device cpu]

For each task: a fresh model with random running statistics and `models` vectors around its subset
(timing does not depend on training). Columns: one by one (load the vector, run the full model), the
whole model vmapped (no split), split + vmap (pdiff), and the floor: the prefix once plus the suffix
of one model times `models`, each run plainly (`bench.common.measure_evaluation`). On the CPU the times are CPU
seconds, and the results are bench/evaluation.json and the "evaluation" section of BENCHMARKS.md; with
`--device cuda` they are wall-clock seconds with `torch.cuda.synchronize()` around each timed block, and the
section is printed only (`python -m bench.gpu` puts its own measurement in the GPU section).
"""

from __future__ import annotations

import argparse

import torch

from . import common

NAME = "evaluation"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__)
    parser.set_defaults(data_dir="/work/shared/data")
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tasks", nargs="*", default=list(common.EVALUATION_TASKS))
    parser.add_argument("--device", default="cpu", help="cpu (writes BENCHMARKS.md) or cuda (prints the section)")
    return parser


def measure(args: argparse.Namespace) -> dict:
    common.set_threads(args)
    rows = [common.measure_evaluation(task, common.EVALUATION_TASKS.get(task), args.models, args.repeats,
                                      args.data_dir, args.device) for task in args.tasks]
    tasks = "" if args.tasks == list(common.EVALUATION_TASKS) else " --tasks " + " ".join(args.tasks)
    return common.results(f"python -m bench.evaluation --models {args.models} --repeats {args.repeats}{tasks}",
                          args.device, models=args.models, repeats=args.repeats, rows=rows)


def render(results: dict) -> str:
    models, repeats, p = results["models"], results["repeats"], results["provenance"]
    return f"""## Evaluation of {models} models: batched vs one by one

`{p['command']}` on {common.machine(p)}.
Medians of {repeats} runs (one by one: {max(1, repeats - 1)}). Fresh models with random BatchNorm
statistics and vectors around their subset: timing does not depend on training. The floor is the prefix
(everything before the first generated parameter) run once plus one model's suffix times {models},
each run plainly; "split / floor" below 1 means batching the suffix beats running it model by model.

{common.table(common.EVALUATION_HEADER, [common.evaluation_row(m) for m in results["rows"]])}"""


def main() -> None:
    args = parser().parse_args()
    figures = measure(args)
    if torch.device(args.device).type != "cpu":
        print(render(figures))  # wall-clock seconds on a device: not the CPU section
        return
    common.publish(NAME, figures, render)


if __name__ == "__main__":
    main()
