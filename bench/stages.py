"""Time and peak memory of each stage of the default `pdiff run`, each stage in its own process.

    python -m bench.stages [--task mnist1d-convnet] [--repeats 3] [--runs-dir runs/bench] [key=value ...]

Each repeat runs collect, train, generate, evaluate and report as separate `python -m pdiff STAGE`
processes in a fresh run folder; a stage's CPU seconds and peak resident memory are those of its
process (os.wait4).
Writes the "stages" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pdiff.config import STAGES

from .markdown import machine, table, write_section


def run_stage(stage: str, task: str, runs_dir: Path, overrides: list[str]) -> dict:
    """Run one stage in a child process: wall seconds, CPU seconds, peak RSS (MiB)."""
    command = [sys.executable, "-m", "pdiff", stage, task, *overrides, "--runs-dir", str(runs_dir), "-q"]
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"`{' '.join(command)}` failed")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mnist1d-convnet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/bench"))
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args()
    results = {stage: [] for stage in STAGES}
    for repeat in range(args.repeats):
        shutil.rmtree(args.runs_dir / args.task, ignore_errors=True)
        for stage in STAGES:
            results[stage].append(run_stage(stage, args.task, args.runs_dir, args.overrides))
            print(repeat, stage, results[stage][-1], flush=True)
    rows = []
    for stage, runs in results.items():
        rows.append([stage, f"{statistics.median(r['cpu'] for r in runs):.1f}",
                     f"{statistics.median(r['wall'] for r in runs):.1f}", f"{max(r['rss'] for r in runs):.0f}"])
    total_cpu = sum(statistics.median(r["cpu"] for r in runs) for runs in results.values())
    total_wall = sum(statistics.median(r["wall"] for r in runs) for runs in results.values())
    rows.append(["**total**", f"**{total_cpu:.1f}**", f"{total_wall:.1f}", ""])
    header = ["stage", "CPU s (median)", "wall s (median)", "peak RSS MiB (max)"]
    write_section("stages", f"""## Stages of `pdiff run {args.task}`

`python -m bench.stages --task {args.task} --repeats {args.repeats}{''.join(' ' + o for o in args.overrides)}` on
{machine()}. Medians of {args.repeats} runs; every stage is its own process, so its time includes starting
Python and importing torch (about 2-3 CPU s; generate also imports diffusers, which `pdiff run` has imported
in train already) and its peak memory includes the interpreter and torch (about 300-400 MiB). Wall time counts
other jobs on the machine; CPU time adds up the threads.

{table(header, rows)}
""")


if __name__ == "__main__":
    main()
