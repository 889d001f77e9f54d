"""The README and docs/ stay true to the repository: links resolve, the README stays short, the commands it
gives are the ones CI runs, every task preset is in its table, and the project speaks of itself only."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pdiff.presets import task_names

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "BENCHMARKS.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 250
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target): inline links
FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
RUNNABLE = "<!-- runnable -->"  # directly before a ```python fence: the block runs as it stands, in seconds
RUNNABLE_SLOW = "<!-- runnable, slow -->"  # the same for a block that trains for a minute: the slow tier runs it


def runnable_blocks(page: Path) -> list[tuple[int, str, bool]]:
    """(line number, code, slow) of every block of `page` marked RUNNABLE or RUNNABLE_SLOW; a marker before
    anything but a Python fence fails, so that no marked block is skipped."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() not in (RUNNABLE, RUNNABLE_SLOW):
            continue
        assert i + 1 < len(lines) and lines[i + 1].strip() == "```python", \
            f"{page.name}:{i + 1}: {RUNNABLE} must stand directly before a ```python fence"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        blocks.append((i + 3, "\n".join(lines[i + 2:end]), line.strip() == RUNNABLE_SLOW))
    return blocks


BLOCKS = [pytest.param(page, line, code, id=f"{page.relative_to(ROOT).as_posix()}:{line}",
                       marks=[pytest.mark.slow] if slow else [])
          for page in PAGES for line, code, slow in runnable_blocks(page)]


def prose(page: Path) -> str:
    """The page without its fenced code blocks (a `[x](y)` inside code is no link)."""
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(page).splitlines() if line.startswith("#")}


def relative_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page)) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved in (*PAGES, BENCHMARKS) and anchor not in anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.name}: links that resolve to nothing: {broken}"


def test_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_readme_gives_the_commands_ci_and_a_newcomer_run() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = next(line.strip() for line in ci.splitlines() if "pytest" in line and not line.startswith("#"))
    readme = README.read_text(encoding="utf-8")
    assert test_command in readme
    assert "python -m pip install -e . && pdiff run" in readme


def test_every_task_is_in_the_readme_table() -> None:
    table = "\n".join(line for line in README.read_text(encoding="utf-8").splitlines() if line.startswith("|"))
    missing = [name for name in task_names() if f"`{name}`" not in table]
    assert not missing, f"tasks missing from README.md's table: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_pages_speak_of_the_project_only(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    found = re.findall(r"\bissue \d+|\b20\d\d-\d\d-\d\d\b|DESIGN\.md", text)
    assert not found, f"{page.name} mentions development history: {found}"


def test_some_blocks_are_marked_runnable() -> None:
    assert BLOCKS, f"no Python block in README.md or docs/ is marked {RUNNABLE}"


@pytest.mark.parametrize("page, line, code", BLOCKS)
def test_runnable_blocks_run(page: Path, line: int, code: str, tmp_path: Path) -> None:
    """Each marked block runs as it stands, in a fresh interpreter in an empty folder, on one thread."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PDIFF_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"{page.name}:{line} fails:\n{done.stderr[-3000:]}"


def test_the_readmes_own_images_example_runs_on_a_small_folder_into_a_folder_of_its_own(tmp_path, monkeypatch) -> None:
    """The README's command as written, on a folder of a few dozen images, plus settings that only shrink the work:
    it runs, and writes runs/<its task=> alone, never the preset's folder."""
    from typer.testing import CliRunner

    from pdiff.cli import app
    from tests.conftest import write_image_folder

    text = README.read_text(encoding="utf-8").replace("\\\n", " ")
    command = next(line for line in text.splitlines() if "pdiff run" in line and "data.name=imagefolder" in line)
    args = shlex.split(command.strip())[2:]
    assert args[args.index("--data-dir") + 1] == "my-photos" and "task=my-photos" in args
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    write_image_folder(tmp_path / "my-photos", {"train": {"cat": 10, "dog": 10}, "test": {"cat": 3, "dog": 3}},
                       size=(40, 36))
    smaller = ["collect.epochs=1", "collect.k=4", "train.autoencoder.steps=20", "train.diffusion.steps=20",
               "generate.n=4", "generate.sampler=ddim", "generate.steps=5", "evaluate.baseline_n=2",
               "train.health_tolerance=1.0"]
    result = CliRunner().invoke(app, ["run", *args, *smaller, "--runs-dir", "runs", "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["my-photos"]
