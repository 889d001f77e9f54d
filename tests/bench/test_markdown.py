"""BENCHMARKS.md stays a sequence of well-formed sections, so every script can rewrite its own."""

import re

from bench.markdown import BENCHMARKS, write_section


def test_benchmarks_sections_are_closed_and_not_nested():
    opened = None
    seen = set()
    for line in BENCHMARKS.read_text().splitlines():
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


def test_write_section_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    write_section("a", "first", path)
    write_section("b", "second", path)
    write_section("a", "third", path)
    text = path.read_text()
    assert "first" not in text and text.index("third") < text.index("second")
