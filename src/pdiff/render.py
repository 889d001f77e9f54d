"""Markdown and self-contained HTML from one list of sections: the run report, the ablation report and the
model and dataset cards of an export are all written with it, so they read alike.

A section is a title with optional text, one table (header and rows of strings) and PNG figures from one folder;
the HTML embeds the figures as base64, so it opens offline.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Section:
    """One part of a page: a title, then its text, its table and its figures (PNG names in the figure folder)."""

    title: str
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)  # PNG file names in the report folder


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
            parts.append(f"<p>{html.escape(s.text).replace('*', '').replace(chr(10), '<br>')}</p>")
        if s.header:
            parts.append("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in s.header) + "</tr>")
            parts += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in s.rows]
            parts.append("</table>")
        for name in s.figures:
            data = base64.b64encode((figure_dir / name).read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(name)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)
