"""Time and peak memory of each stage of the default `pdiff run`, each stage in its own process.

    python -m bench.stages [--task mnist1d-convnet] [--repeats 3] [--runs-dir runs/bench] [key=value ...]

Each repeat runs collect, train, generate, evaluate and report as separate `python -m pdiff STAGE`
processes in a fresh run folder; a stage's CPU seconds and peak resident memory are those of its
process (os.wait4, `bench.common.stage_in_process`).
Writes bench/stages.json and the "stages" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics

from pdiff.config import STAGES

from . import common

NAME = "stages"


def parser() -> argparse.ArgumentParser:
    parser = common.arguments(__doc__, runs_dir="runs/bench")
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    return parser


def measure(args: argparse.Namespace) -> dict:
    """stage -> one {"wall", "cpu", "rss"} per repeat, each repeat in a fresh run folder."""
    overrides = [*args.overrides, *common.data_overrides(args)]
    stages = {stage: [] for stage in STAGES}
    for repeat in range(args.repeats):
        shutil.rmtree(args.runs_dir / args.task, ignore_errors=True)
        for stage in STAGES:
            stages[stage].append(common.stage_in_process(stage, args.task, args.runs_dir, overrides))
            print(repeat, stage, stages[stage][-1], flush=True)
    return common.results(f"python -m bench.stages --task {args.task} --repeats {args.repeats}"
                          + "".join(" " + o for o in args.overrides), task=args.task, repeats=args.repeats,
                          stages=stages)


def render(results: dict) -> str:
    stages, repeats = results["stages"], results["repeats"]
    rows = []
    for stage, runs in stages.items():
        rows.append([stage, f"{statistics.median(r['cpu'] for r in runs):.1f}",
                     f"{statistics.median(r['wall'] for r in runs):.1f}", f"{max(r['rss'] for r in runs):.0f}"])
    total_cpu = sum(statistics.median(r["cpu"] for r in runs) for runs in stages.values())
    total_wall = sum(statistics.median(r["wall"] for r in runs) for runs in stages.values())
    rows.append(["**total**", f"**{total_cpu:.1f}**", f"{total_wall:.1f}", ""])
    header = ["stage", "CPU s (median)", "wall s (median)", "peak RSS MiB (max)"]
    p = results["provenance"]
    return f"""## Stages of `pdiff run {results['task']}`

`{p['command']}` on
{common.machine(p)}. Medians of {repeats} runs; every stage is its own process, so its time includes starting
Python and importing torch (about 2-3 CPU s; generate also imports diffusers, which `pdiff run` has imported
in train already) and its peak memory includes the interpreter and torch (about 300-400 MiB). Wall time counts
other jobs on the machine; CPU time adds up the threads.

{common.table(header, rows)}"""


def main() -> None:
    common.publish(NAME, measure(parser().parse_args()), render)


if __name__ == "__main__":
    main()
