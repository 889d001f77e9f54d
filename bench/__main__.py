"""`python -m bench --render-all`: rebuild every BENCHMARKS.md section that has its results JSON, computing nothing.

Each bench/NAME.json is rendered by `bench.NAME.render` into the section NAME (see bench/common.py for the
convention); sections without a JSON are archival text and stay as they are.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from . import common


def render_all(path: Path = common.BENCHMARKS) -> list[str]:
    """Rewrite the section of every script with a results JSON; the names rendered, in order."""
    names = sorted(p.stem for p in (common.ROOT / "bench").glob("*.json"))
    for name in names:
        figures = common.load_results(name)
        render = importlib.import_module(f"bench.{name}").render
        common.write_section(name, render(figures), path, **common.measured_at(figures))
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-all", action="store_true", required=True,
                        help="rebuild BENCHMARKS.md's sections from bench/*.json")
    parser.parse_args()
    print("rendered: " + ", ".join(render_all()))


if __name__ == "__main__":
    main()
