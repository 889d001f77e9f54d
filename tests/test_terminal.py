"""What `pdiff run` prints at the end: within the terminal's width, every group name whole, more when wider."""

import io
import json

from rich.console import Console

from pdiff.terminal import print_summary
from tests.test_report import heldout_record


def printed(results: dict, width: int) -> list[str]:
    out = io.StringIO()
    print_summary(results, Console(file=out, width=width), {})
    return out.getvalue().splitlines()


def test_80_columns_hold_every_line_and_every_group_name_whole(tiny_run) -> None:
    results = json.loads((tiny_run / "evaluate/results.json").read_text())
    lines = printed(results, 80)
    assert max(map(len, lines)) <= 80, "\n".join(line for line in lines if len(line) > 80)
    rows = lines[next(i for i, line in enumerate(lines) if line.split()[:2] == ["group", "n"]):]
    for group in results["summary"]:
        row = next(line for line in rows if line.split()[:1] == [group])  # one line per group, its name whole
        assert f"{100 * results['summary'][group]['mean']:.2f}" in row.split()
    assert "vs original [95% CI]" in "\n".join(lines)
    assert any(line.startswith(("  generated ", "  trade-off: generated ")) for line in lines)
    assert lines[0].startswith("The generated models' mean test accuracy is ")
    assert not any(" (this generator)" in line for line in lines if line.startswith("  "))  # said in the headings


def test_a_wider_terminal_shows_every_column_and_the_verdicts_in_full(tiny_run) -> None:
    results = json.loads((tiny_run / "evaluate/results.json").read_text())
    narrow, wide = printed(results, 80), printed(results, 140)
    header = next(line for line in wide if line.split()[:2] == ["group", "n"])
    assert header.split()[2:7] == ["best", "max", "mean", "median", "min"]
    assert "median" not in next(line for line in narrow if line.split()[:2] == ["group", "n"])
    assert "no diff." not in "\n".join(wide) and max(map(len, wide)) <= 140


def test_the_generalization_table_wraps_its_headers_not_its_rows(tiny_run) -> None:
    results = json.loads((tiny_run / "evaluate/results.json").read_text())
    row = {"memorization_ratio_median": 0.5, "coverage": 0.4, "coverage_ci_low": 0.2, "coverage_ci_high": 0.6,
           "max_iou_to_training_median": 0.3, "max_iou_to_heldout_median": 0.2}
    results["generalization"] = {"generated": row, "heldout": row}
    lines = printed(results, 80)
    assert max(map(len, lines)) <= 80
    for group in ("generated", "heldout"):
        assert any(line.split() == [group, "0.50", "0.40", "[0.20,", "0.60]", "0.300", "0.200"] for line in lines)


def test_the_heldout_test_is_one_line_per_baseline(tiny_run) -> None:
    results = json.loads((tiny_run / "evaluate/results.json").read_text())
    results["memorization"] = heldout_record()
    lines = printed(results, 120)
    start = next(i for i, line in enumerate(lines) if line.startswith("Held-out test, 6 models per group: "))
    assert lines[start].endswith("; generated minus")
    assert [line.split()[0] for line in lines[start + 1:start + 3]] == ["mean_of_k", "interpolation"]
    assert all(" accuracy " in line and " points [" in line for line in lines[start + 1:start + 3])
    assert max(map(len, printed(results, 80))) <= 80
