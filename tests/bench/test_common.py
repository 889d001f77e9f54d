"""The bench convention: BENCHMARKS.md is well-formed sections, each rendered from its committed JSON (or marked
archival), results JSON written atomically and versioned, and no script importing another."""

import ast
import json
import re
import shutil

import pytest
from bench.__main__ import EXPECTED, README, glance_table, render_all

from bench import common

SCRIPTS = sorted(p.stem for p in (common.ROOT / "bench").glob("*.py") if p.stem not in {"__init__", "__main__",
                                                                                           "common"})


def test_benchmarks_sections_are_closed_and_not_nested():
    opened = None
    seen = set()
    for line in common.BENCHMARKS.read_text().splitlines():
        marker = re.fullmatch(r"<!-- (/?)bench:(\S+) -->", line.strip())
        if marker is None:
            continue
        closing, name = marker.groups()
        if closing:
            assert opened == name, f"section {name} closed while {opened} is open"
            opened = None
        else:
            assert opened is None, f"section {name} opened inside {opened}"
            assert name not in seen, f"section {name} appears twice"
            seen.add(name)
            opened = name
    assert opened is None, f"section {opened} is never closed"


def test_write_section_replaces_only_its_own_section_and_names_the_commit(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    common.write_section("a", "first", path, commit="abc123")
    common.write_section("b", "second", path)
    common.write_section("a", "third", path, commit="def456")
    text = path.read_text()
    assert "first" not in text and text.index("third") < text.index("second")
    assert "*Measured at commit `def456`.*" in text and "abc123" not in text
    assert common.read_sections(path) == {"a": "third\n\n*Measured at commit `def456`.*",
                                          "b": "second\n\n*Commit not recorded.*"}


def test_committed_benchmarks_md_is_what_the_committed_json_renders(tmp_path):
    """`python -m bench --render-all` on the committed files changes nothing: every section with a JSON is its
    render, so the JSON holds everything the text says."""
    copy, readme, expected = tmp_path / "BENCHMARKS.md", tmp_path / "README.md", tmp_path / "expected.json"
    shutil.copy(common.BENCHMARKS, copy)
    shutil.copy(README, readme)
    assert render_all(copy, readme, expected)
    assert copy.read_text() == common.BENCHMARKS.read_text()
    assert readme.read_text() == README.read_text()
    assert expected.read_text() == EXPECTED.read_text()  # what `pdiff run` says a preset's stages take


def test_the_readmes_results_table_is_what_the_committed_json_renders():
    table = glance_table()
    assert f"\n{table}\n" in README.read_text()
    sections = common.read_sections()
    for target in re.findall(r"\]\(BENCHMARKS\.md#([^)]+)\)", table):
        assert any(common.link(body).endswith(f"(#{target})") for body in sections.values()), target
    assert "| mnist1d-convnet, 5 generators |" in table  # the default task's headline, from bench/seeds.json


def test_every_section_has_its_json_or_is_marked_archival_and_is_stamped():
    for name, text in common.read_sections().items():
        if not common.results_path(name).is_file():
            assert text.startswith(common.ARCHIVAL), f"section {name} has no bench/{name}.json and is not archival"
        assert text.endswith(("*Commit not recorded.*", ".*")) and ("*Measured at commit" in text
                                                                    or "*Commit not recorded.*" in text)


def test_benchmarks_speak_of_the_project_only():
    text = common.BENCHMARKS.read_text()
    # dates only where the contents table and a section's stamp ("measured at commit `c` on DATE") give them
    found = re.findall(r"\bissue\b|(?<!` on )\b20\d\d-\d\d-\d\d\b(?! \|)|\bagents?\b|\bsessions?\b", text)
    assert not found, f"BENCHMARKS.md tells its history: {found}"


@pytest.mark.parametrize("name", sorted(p.stem for p in (common.ROOT / "bench").glob("*.json")))
def test_every_results_json_is_versioned_and_says_where_it_was_measured(name):
    figures = json.loads(common.results_path(name).read_text())
    assert isinstance(figures["format_version"], int) and figures["format_version"] <= common.FORMAT_VERSION
    assert {"command", "pdiff_version", "git_commit", "torch", "threads", "device"} <= set(figures["provenance"])
    assert figures["provenance"]["command"].startswith(f"python -m bench.{name}")
    assert name in SCRIPTS, f"bench/{name}.json has no script bench/{name}.py to render it"


def test_results_are_saved_atomically_with_provenance_and_newer_formats_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "results_path", lambda name: tmp_path / f"{name}.json")
    assert common.load_results("toy") == {}
    figures = common.results("python -m bench.toy --x 1", rows=[1, 2])
    assert figures["format_version"] == common.FORMAT_VERSION and figures["rows"] == [1, 2]
    assert figures["provenance"]["threads"] >= 1 and figures["provenance"]["command"] == "python -m bench.toy --x 1"
    common.save_results("toy", figures)
    assert common.load_results("toy") == figures and not list(tmp_path.glob("*.tmp"))
    common.save_results("toy", {**figures, "format_version": common.FORMAT_VERSION + 1})
    with pytest.raises(SystemExit, match="newer than this bench's"):
        common.load_results("toy")


def test_publish_writes_the_json_then_the_section_with_its_commit(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "results_path", lambda name: tmp_path / f"{name}.json")
    figures = common.results("python -m bench.toy", rows=[3])
    figures["provenance"]["git_commit"] = "0123abcd"
    common.publish("toy", figures, lambda r: f"## Toy\n\nrows: {r['rows']}", tmp_path / "BENCHMARKS.md")
    assert json.loads((tmp_path / "toy.json").read_text()) == figures
    date = figures["provenance"]["date"]
    assert common.read_sections(tmp_path / "BENCHMARKS.md") == {
        "toy": f"### Toy\n\nrows: [3]\n\n*Measured at commit `0123abcd` on {date}.*"}


def test_the_contents_name_each_sections_question_script_task_commit_and_date(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    common.write_section("seeds", "## Seeds (`python -m bench.seeds`)\n\nrows", path, commit="0123abcdef",
                         date="2030-01-02")
    common.write_section("stages", f"{common.ARCHIVAL}\n\n## Stages\n\ntimes", path)
    common.write_section("toy", "## Toy\n\nrows", path)
    text = path.read_text()
    question = "Does a verdict hold for p-diff as a method, and are the CIs right?"
    seeds = next(e for e in common.QUESTIONS[question])
    assert (f"| {question} | [Seeds](#seeds-python--m-benchseeds) | `bench.seeds` | {seeds.task} | `0123abc` | "
            "2030-01-02 |") in text
    assert "| [Stages](#stages) | `bench.stages` | mnist1d-convnet | not recorded | not recorded |" in text
    assert "| Other measurements | [Toy](#toy) |" in text
    questions = [q for q in common.QUESTIONS if q.startswith(("Does a verdict", "How long"))] + [common.OTHER]
    order = [text.index(f"## {q}\n") for q in questions]
    assert order == sorted(order) and text.index("### Seeds") > order[0]
    common.write_document(common.read_sections(path), path)  # rewriting is a fixed point: headings move down once
    assert path.read_text() == text


def test_every_committed_section_has_its_question():
    known = {e.name for entries in common.QUESTIONS.values() for e in entries}
    assert not set(common.read_sections()) - known, "add the section's Entry to bench.common.QUESTIONS"
    assert f"## {common.OTHER}" not in common.BENCHMARKS.read_text()


def test_machine_is_rendered_from_the_provenance():
    p = {"processor": "x86_64", "cores": 2, "torch": "2.4.0", "threads": 1, "load_at_start": 3.14}
    assert common.machine(p) == ("x86_64, 2 CPU cores, torch 2.4.0 with 1 thread(s) (1-minute load average 3.1 at "
                                 "the start); times are CPU seconds of the benchmarking process")


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_imports_no_other_script(name):
    tree = ast.parse((common.ROOT / "bench" / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = ("." * node.level) + (node.module or "")
            names = {a.name for a in node.names}
            assert module in {".common", "bench.common"} or (module in {".", "bench"} and names == {"common"}) \
                or not module.startswith((".", "bench")), f"bench/{name}.py imports {module} {names}"
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("bench.") and a.name != "bench.common" for a in node.names), name
