"""What every benchmark shares: median timing, peak memory of a child process, and BENCHMARKS.md sections.

Each script owns one section of BENCHMARKS.md, between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`,
and rewrites only that section, so the scripts can be rerun in any order.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
LOAD_AT_START = os.getloadavg()[0]  # taken when a benchmark script starts, before its own work
TITLE = "# pdiff benchmarks\n\nEvery section is written by the script named in it; rerun that script to refresh it.\n"


def clock(device: torch.device | str = "cpu") -> float:
    """Seconds now: CPU time of this process for the CPU, wall time after `torch.cuda.synchronize()` for a GPU.

    CPU time on the CPU: on a machine shared with other jobs the wall clock mostly measures them, and with one
    torch thread CPU time equals the wall time the same work takes on an idle core. On a GPU the work runs after
    the Python call that queued it returns, so the clock is read only once every queued kernel has finished.
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device | str = "cpu"
                   ) -> tuple[float, list[float]]:
    """Median seconds (see `clock`) of `repeats` calls of fn (and every time, for the record)."""
    times = []
    for _ in range(repeats):
        start = clock(device)
        fn()
        times.append(clock(device) - start)
    return statistics.median(times), times


def hardware() -> str:
    """The processor, core count, torch version and thread count, in one phrase."""
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} "
            f"with {torch.get_num_threads()} thread(s)")


def machine() -> str:
    """One line naming the hardware and thread count the numbers were taken on, and what the times are."""
    return (f"{hardware()} (1-minute load average {LOAD_AT_START:.1f} at the start); times are CPU seconds of "
            "the benchmarking process")


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md with `body`."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text() if path.is_file() else TITLE
    block = f"{start}\n{body.strip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
