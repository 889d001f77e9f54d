"""`python -m bench --render-all`: rebuild BENCHMARKS.md and the README's results table from the committed JSON,
computing nothing.

Each bench/NAME.json is rendered by `bench.NAME.render` into the section NAME (see bench/common.py for the
convention); sections without a JSON are archival text and stay as they are. A script that has a
`glance(results) -> [[question, task, finding], ...]` adds those rows to the README's "results at a glance" table,
each linking to its section; one that has an `expected(results)` adds the stage times and memory it measured to
src/pdiff/tasks/expected.json, which `pdiff run` prints before it runs a preset's stages.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

from . import common

README = common.ROOT / "README.md"
EXPECTED = common.ROOT / "src" / "pdiff" / "tasks" / "expected.json"  # what `pdiff run` says a stage will take
GLANCE = ("<!-- glance: written by `python -m bench --render-all` from bench/*.json -->", "<!-- /glance -->")


def render_all(path: Path = common.BENCHMARKS, readme: Path = README, expected: Path = EXPECTED) -> list[str]:
    """Rewrite the section of every script with a results JSON, the README's table and the expected stage
    costs; the names rendered."""
    names = sorted(p.stem for p in (common.ROOT / "bench").glob("*.json"))
    for name in names:
        figures = common.load_results(name)
        render = importlib.import_module(f"bench.{name}").render
        common.write_section(name, render(figures), path, **common.measured_at(figures))
    write_glance(readme)
    write_expected(expected)
    return names


def expected_costs() -> dict:
    """task -> {"on": where, "stages": {stage: {"seconds", "peak_mib"}}}: what the scripts with an
    `expected(results)` measured of a preset's stages, from their committed JSON."""
    found: dict = {}
    for name in sorted(p.stem for p in (common.ROOT / "bench").glob("*.json")):
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "expected"):
            for task, entry in module.expected(common.load_results(name)).items():
                found.setdefault(task, entry)  # one script's measurement per task, the first in name order
    return found


def write_expected(path: Path = EXPECTED) -> None:
    path.write_text(json.dumps(expected_costs(), indent=1, sort_keys=True) + "\n")


def glance_table() -> str:
    """The README's results table: every script's `glance` rows from its committed JSON, in the order of
    BENCHMARKS.md's questions, each linking to its section there."""
    rows = []
    for name in (entry.name for entries in common.QUESTIONS.values() for entry in entries):
        if not common.results_path(name).is_file():
            continue
        module = importlib.import_module(f"bench.{name}")
        if hasattr(module, "glance"):
            figures = common.load_results(name)
            link = common.link(module.render(figures), common.BENCHMARKS.name)
            rows += [[*row, link] for row in module.glance(figures)]
    return common.table(["question", "task", "finding", "measured in"], rows)


def write_glance(readme: Path = README) -> None:
    """Put `glance_table()` between the README's GLANCE markers."""
    text = readme.read_text()
    if GLANCE[0] not in text or GLANCE[1] not in text:
        raise SystemExit(f"{readme} has no {GLANCE[0]} ... {GLANCE[1]} markers for the results table")
    head, rest = text.split(GLANCE[0], 1)
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{GLANCE[0]}\n{glance_table()}\n{GLANCE[1]}{rest.split(GLANCE[1], 1)[1]}")
    tmp.replace(readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--render-all", action="store_true", required=True,
                        help="rebuild BENCHMARKS.md's sections and the README's results table from bench/*.json")
    parser.parse_args()
    print("rendered: " + ", ".join(render_all()))


if __name__ == "__main__":
    main()
