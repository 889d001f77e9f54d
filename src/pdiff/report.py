"""The report: tables and figures of one run, as report.md and a self-contained report.html.

Both files are rendered from the same list of sections, so they always say the same thing; the
HTML embeds its figures (base64 PNG) and opens offline in any browser.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .store import save_bytes, save_text  # noqa: E402

GROUP_COLORS = {"original": "tab:blue", "ensemble": "tab:green", "generated": "tab:red"}
ACCURACY_COLUMNS = ("best", "max", "mean", "median", "min")


@dataclass
class Section:
    title: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # PNG file names in the report folder


def accuracy_table(summary: dict[str, dict], split: str = "test") -> tuple[list[str], list[list[str]]]:
    """Rows of best/max/mean/median/min accuracy (in %) per group, for 'test' or 'val'."""
    header = ["group", "models", *ACCURACY_COLUMNS]
    rows = []
    for group, s in summary.items():
        if split == "test":
            values = [s[c] for c in ACCURACY_COLUMNS]
        else:
            values = [s["val_best"], s["val_best"], s["val_mean"], s["val_median"], float("nan")]
        rows.append([group, str(s["count"]), *(f"{100 * v:.2f}" if v == v else "" for v in values)])
    return header, rows


def write_report(out_dir: str | Path, results: dict, config: dict, seconds: dict[str, float]) -> Path:
    """Write figures, report.md and report.html for one run's results.json; returns report.md's path."""
    out_dir = Path(out_dir)
    summary, similarity = results["summary"], results["similarity"]
    sections = [Section("Setup", text=f"Task `{results['task']}`: {config.get('description', '')} "
                        f"Seed {config['seed']}; {summary['original']['count']} checkpoints of the subset "
                        f"{', '.join(config['collect']['subset'])}; {summary['generated']['count']} generated "
                        f"models ({config['generate']['sampler']} sampler).")]
    header, rows = accuracy_table(summary, "test")
    sections.append(Section(
        "Test accuracy (%)", header=header, rows=rows,
        text="*best* is the test accuracy of the model with the highest validation accuracy (nothing is chosen "
             "on the test set); *max* is the test-set maximum, the paper's 'best'. The ensemble is the uniform "
             "weight average of all checkpoints."))
    header, rows = accuracy_table(summary, "val")
    sections.append(Section("Validation accuracy (%)", header=header[:-1], rows=[r[:-1] for r in rows]))

    plot_accuracy_histogram(results["models"], out_dir / "accuracy_hist.png")
    plot_accuracy_vs_similarity(results["models"], similarity, out_dir / "accuracy_vs_similarity.png")
    sections.append(Section("Accuracy distributions", figures=["accuracy_hist.png"]))
    sim_rows = [[pair, f"{v:.3f}"] for pair, v in similarity["mean_iou"].items()]
    sim_rows += [[f"max IoU of {g} to any original (mean)", f"{v['mean']:.3f}"]
                 for g, v in similarity["max_iou_to_original"].items()]
    sections.append(Section(
        "Similarity of wrong-prediction sets (IoU)", header=["pair", "IoU"], rows=sim_rows,
        figures=["accuracy_vs_similarity.png"],
        text="IoU = |W1 ∩ W2| / |W1 ∪ W2| over the test examples each model gets wrong. Originals that differ "
             "have mean IoU well below 1; a generated model with max IoU near 1 copies a checkpoint."))
    sections.append(Section("Time per stage (s)", header=list(seconds),
                            rows=[[f"{v:.1f}" if v is not None else "" for v in seconds.values()]]))
    sections.append(Section("Config", text="```json\n" + json.dumps(config, indent=2) + "\n```"))

    title = f"p-diff report: {results['task']}"
    save_text(out_dir / "report.md", render_markdown(title, sections))
    save_text(out_dir / "report.html", render_html(title, sections, out_dir))
    return out_dir / "report.md"


def plot_accuracy_histogram(models: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for group in ("original", "generated"):
        acc = [100 * m["test_accuracy"] for m in models if m["group"] == group]
        ax.hist(acc, bins=30, alpha=0.6, label=f"{group} ({len(acc)})", color=GROUP_COLORS[group])
    for m in models:
        if m["group"] == "ensemble":
            ax.axvline(100 * m["test_accuracy"], color=GROUP_COLORS["ensemble"], ls="--", label="ensemble")
    ax.set(xlabel="test accuracy (%)", ylabel="models")
    ax.legend()
    _save_figure(fig, path)


def plot_accuracy_vs_similarity(models: list[dict], similarity: dict, path: Path) -> None:
    """Each model's test accuracy against its max IoU to any original (the paper's central scatter)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for group, entry in similarity["max_iou_to_original"].items():
        acc = [100 * m["test_accuracy"] for m in models if m["group"] == group]
        ax.scatter(entry["values"], acc, s=14, alpha=0.7, label=group, color=GROUP_COLORS.get(group))
    ax.set(xlabel="max IoU of wrong predictions to any original", ylabel="test accuracy (%)")
    ax.legend()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buffer = _png_bytes(fig)
    plt.close(fig)
    save_bytes(path, buffer)


def _png_bytes(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    return out.getvalue()


def render_markdown(title: str, sections: list[Section]) -> str:
    lines = [f"# {title}", ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.text:
            lines += [s.text, ""]
        if s.header:
            lines.append("| " + " | ".join(s.header) + " |")
            lines.append("|" + "---|" * len(s.header))
            lines += ["| " + " | ".join(row) + " |" for row in s.rows]
            lines.append("")
        lines += [f"![{name}]({name})" for name in s.figures]
        if s.figures:
            lines.append("")
    return "\n".join(lines)


def render_html(title: str, sections: list[Section], figure_dir: Path) -> str:
    """One self-contained page: tables as HTML, figures embedded as base64 PNG."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .7em;"
             "text-align:right}th{background:#f3f3f3}pre{background:#f6f6f6;padding:1em;overflow:auto}"
             "img{max-width:100%}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text.startswith("```"):
            parts.append(f"<pre>{html.escape(s.text.strip('`').removeprefix('json'))}</pre>")
        elif s.text:
            parts.append(f"<p>{html.escape(s.text).replace('*', '')}</p>")
        if s.header:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in s.rows]
            parts.append("</table>")
        for name in s.figures:
            data = base64.b64encode((figure_dir / name).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
