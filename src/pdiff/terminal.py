"""What `pdiff run` prints when it finishes: the result in words, the accuracy table and the generated models'
verdicts, fitted to the terminal's width.

At 80 columns every line fits and every group name is whole: one line per group, short verdict words explained by
a legend, and the columns a reader needs least (min, median, max) left out; a wider terminal gets them back, and
the verdicts in full words. Everything is read from results.json (see `pdiff.report` for the words it uses).
"""

from __future__ import annotations

import textwrap

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .report import accuracy_table, generalization_table
from .words import in_points, points_with_ci, summary_in_words, verdict_groups

# accuracy_table's headers as the terminal names them (the report's wider pages keep the long names)
HEADERS = {"models": "n", "mean - original [95% CI]": "vs original [95% CI]"}
SHORT_VERDICTS = {"no detectable difference": "no diff."}
LEFT_OUT_FIRST = ("min", "median", "max")  # the columns a narrow terminal drops, in this order
LEGEND = {"n": "n: models", "best": "best: the val-chosen model's", "max": "max: the test-set maximum (the paper's "
          "best)", "vs original [95% CI]": "vs original: mean minus the originals' mean [95% CI]",
          "no diff.": "no diff.: no detectable difference"}
INDENT = 2


def table(title: str, header: list[str], rows: list[list[str]], console: Console) -> Table:
    """A table without side borders, within the console's width where it can be: a header wider than its column's
    cells is wrapped between words when the table would not fit, so that no cell wraps (one line per row). Names
    and numbers are shown as they are, never read as markup."""
    t = _table(title, header, rows)
    if width_needed(console, t) <= console.width:
        return t
    wrapped = ["\n".join(textwrap.wrap(name, max([len(row[i]) for row in rows] + [len(w) for w in name.split()]),
                                         break_on_hyphens=False))
               for i, name in enumerate(header)]
    return _table(title, wrapped, rows)


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=Text(title), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i, name in enumerate(header):
        t.add_column(Text(name), justify="right", no_wrap=i == 0)  # group and variant names whole
    for row in rows:
        t.add_row(*map(Text, row))
    return t


def width_needed(console: Console, renderable: Table) -> int:
    """The columns `renderable` takes when nothing in it wraps."""
    return console.measure(renderable, options=console.options.update_width(10_000)).maximum


def shorten(line: str) -> str:
    """`line` with its verdicts in their short words ("no diff.")."""
    for long, short in SHORT_VERDICTS.items():
        line = line.replace(long, short)
    return line


def fitted_accuracy_table(results: dict, console: Console) -> tuple[Table, list[str]]:
    """The test accuracy table of results.json at the console's width, and the headers and words it shows: full
    verdicts where they fit, else short ones, then without min, median and max in turn until it fits."""
    header, rows = accuracy_table(results["summary"], comparisons=results.get("comparisons"))
    full = [[HEADERS.get(name, name) for name in header], *rows]
    candidates = [full, [[shorten(cell) for cell in row] for row in full]]
    for name in LEFT_OUT_FIRST:
        dropped = candidates[-1][0].index(name)
        candidates.append([row[:dropped] + row[dropped + 1:] for row in candidates[-1]])
    title = f"{results['task']}: test accuracy (%)"
    for shown in candidates:  # where even the narrowest does not fit, rich narrows its columns
        candidate = table(title, shown[0], shown[1:], console)
        if width_needed(console, candidate) <= console.width:
            break
    return candidate, [cell for row in shown for cell in row]


def generated_verdicts(results: dict, width: int) -> list[tuple[str, list[str]]]:
    """(heading, lines) of the generated models' verdicts against the originals and on the accuracy-novelty plane,
    each heading naming the pair and the scope once; the verdicts in short words when a line would not fit."""
    blocks = []
    for (pair, scope), findings in verdict_groups(results).items():
        if pair == "accuracy-novelty plane":
            blocks.append((f"On the accuracy-novelty plane ({scope}):", findings))
        elif pair.startswith("generated vs"):
            blocks.append((f"Verdicts, {pair} ({scope}):", findings))
    if any(INDENT + len(line) > width for _, lines in blocks for line in lines):
        blocks = [(heading, [shorten(line) for line in lines]) for heading, lines in blocks]
    return blocks


def print_summary(results: dict, console: Console, asked: dict | None = None) -> None:
    """Print a finished run's results.json: the summary in words, the test accuracy table with its legend, the
    target asked of a conditioned generator (`asked`, the generate stage's record), the resolution, the generated
    models' verdicts, the generalization table and the held-out test, every line within the console's width."""
    def say(text: str) -> None:
        console.print(Text(text))  # Text: names are shown as they are, never read as markup

    words = summary_in_words(results)
    if words:
        say(words)
        console.print()
    accuracy, cells = fitted_accuracy_table(results, console)
    console.print(accuracy)
    verdicts = generated_verdicts(results, console.width) if "resolution" in results else []
    words_shown = set(cells) | {word for _, lines in verdicts for line in lines for word in SHORT_VERDICTS.values()
                                if word in line}
    legend = [text for name, text in LEGEND.items() if name in words_shown]
    if legend:
        say("; ".join(legend) + ".")
    if asked and "target" in asked:  # a conditioned generator: what was asked for, beside what was reached
        generated = results["summary"]["generated"]
        say(f"Asked for target {asked['target']} = {100 * asked['target_accuracy']:.2f}% val accuracy (guidance "
            f"{asked['guidance']:g}); the generated models reach {100 * generated['val_mean']:.2f}% val and "
            f"{100 * generated['mean']:.2f}% test on average.")
    if "resolution" in results:
        say(f"This test set resolves differences of about ±{100 * results['resolution']:.2f} points.")
    for heading, lines in verdicts:
        say(heading)
        for line in lines:
            say(" " * INDENT + line)
    if "generalization" in results:
        console.print(table("generalization to held-out checkpoints", *generalization_table(results["generalization"]),
                            console))
    if "memorization" in results:
        record = results["memorization"]
        say(f"Held-out test, {record['models_per_group']} models per group: memorization ratio (median) "
            f"{record['generated']['memorization_ratio_median']:.2f} generated, "
            f"{record['reference']['memorization_ratio_median']:.2f} held-out"
            + ("; generated minus" if record["baselines"] else "."))
        for name, figures in record["baselines"].items():
            compared = figures["comparisons"]
            say(" " * INDENT + f"{name} ({figures['memorization_ratio_median']:.2f}): ratio "
                f"{points_with_ci(compared['median_memorization_ratio'], 1)}, accuracy "
                f"{in_points(compared['mean_test_accuracy'])}")
