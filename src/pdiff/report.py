"""The report: tables and figures of one run, as report.md and a self-contained report.html.

Both files are rendered from the same list of sections, so they always say the same thing; the
HTML embeds its figures (base64 PNG) and opens offline in any browser. The memorization study
(does p-diff make new models or copies of its checkpoints?) gets a table of every group's accuracy,
similarity and distance to the originals, the accuracy vs similarity scatter, IoU bars, a t-SNE of
autoencoder latents and, given several runs' results, max similarity against the number of checkpoints K.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from .store import save_bytes, save_text  # noqa: E402

GROUP_COLORS = {"original": "tab:blue", "ensemble": "tab:green", "generated": "tab:red", "finetune": "tab:purple",
                "mean_of_k": "tab:cyan", "gaussian": "tab:pink"}  # noise@<s>: shades of orange, see group_color
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


def write_report(out_dir: str | Path, results: dict, config: dict, seconds: dict[str, float],
                 latents: np.ndarray | None = None, runs: list[dict] | None = None) -> Path:
    """Write figures, report.md and report.html for one run's results.json; returns report.md's path.

    `latents` [M, d] (row i = results["models"][i]) adds the t-SNE; `runs`, the results.json of several
    runs of the task with different K, adds max similarity vs K.
    """
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
    plot_iou_bars(similarity["mean_iou"], out_dir / "iou_bars.png")
    header, rows = memorization_table(results)
    sections.append(Section(
        "Memorization: new models or copies?", header=header, rows=rows, figures=["accuracy_vs_similarity.png"],
        text="IoU = |W1 ∩ W2| / |W1 ∪ W2| over the test examples each model gets wrong. *max IoU* is each model's "
             "highest IoU to any original (for originals: to any other original), *L2* its distance to the "
             "nearest original in per-tensor standardised units (for originals: to the nearest other one, the "
             "spread among checkpoints); both are means over the group. A group that copies checkpoints sits "
             "at max IoU near 1; one that generalises reaches the originals' accuracy at lower similarity. "
             + baseline_text(results.get("baselines", {}))))
    sections.append(Section("Accuracy distributions", figures=["accuracy_hist.png"]))
    sim_rows = [[pair, f"{v:.3f}"] for pair, v in similarity["mean_iou"].items()]
    sections.append(Section("Mean IoU within and between groups", header=["pair", "IoU"], rows=sim_rows,
                            figures=["iou_bars.png"]))
    if latents is not None:
        plot_tsne(results["models"], latents, out_dir / "tsne.png", seed=config.get("seed", 0))
        sections.append(Section("t-SNE of autoencoder latents", figures=["tsne.png"],
                                text="Every model's parameters encoded by the trained autoencoder (no noise), "
                                     "embedded in 2-D by t-SNE: originals, generated and noise-added models."))
    if runs and len({r["summary"]["original"]["count"] for r in runs}) > 1:
        plot_similarity_vs_k(runs, out_dir / "similarity_vs_k.png")
        sections.append(Section("Max similarity vs number of checkpoints K", figures=["similarity_vs_k.png"],
                                text="Mean over each group of every model's max IoU to the originals, one run per K."))
    sections.append(Section("Time per stage (s)", header=list(seconds),
                            rows=[[f"{v:.1f}" if v is not None else "" for v in seconds.values()]]))
    sections.append(Section("Config", text="```json\n" + json.dumps(config, indent=2) + "\n```"))

    title = f"p-diff report: {results['task']}"
    save_text(out_dir / "report.md", render_markdown(title, sections))
    save_text(out_dir / "report.html", render_html(title, sections, out_dir))
    return out_dir / "report.md"


def group_color(group: str, groups: list[str]) -> str:
    """A fixed colour per group; the noise groups get darker shades of orange as their strength grows."""
    if group.startswith("noise@"):
        noise = [g for g in groups if g.startswith("noise@")]
        return matplotlib.colors.to_hex(plt.cm.Oranges(0.35 + 0.55 * noise.index(group) / max(1, len(noise) - 1)))
    return GROUP_COLORS.get(group, "tab:gray")


def memorization_table(results: dict) -> tuple[list[str], list[list[str]]]:
    """One row per group: models, mean and best test accuracy, mean IoU within, max IoU and L2 to originals."""
    summary, sim = results["summary"], results["similarity"]
    distances = sim.get("distance_to_original", {})
    header = ["group", "models", "mean acc %", "best acc %", "IoU within", "max IoU to originals",
              "L2 to nearest original"]
    rows = []
    for group, s in summary.items():
        within = sim["mean_iou"].get(f"{group}-{group}")
        max_iou = sim["max_iou_to_original"].get(group, {}).get("mean")
        distance = distances.get(group, {}).get("mean")
        rows.append([group, str(s["count"]), f"{100 * s['mean']:.2f}", f"{100 * s['best']:.2f}",
                     *(f"{v:.3f}" if v is not None else "" for v in (within, max_iou, distance))])
    return header, rows


def baseline_text(settings: dict) -> str:
    """What each baseline group is, with the settings this run used."""
    parts = ["Baselines: *ensemble* is the uniform average of all checkpoints"]
    if "noise_strengths" in settings:
        parts.append("*noise@s* are checkpoints plus N(0, s²) noise in standardised units")
    if "finetune" in settings:
        parts.append(f"*finetune* are checkpoints trained {settings['finetune']['steps']} more steps "
                     f"(lr {settings['finetune']['lr']:g})")
    if "mean_of_k" in settings:
        parts.append(f"*mean_of_k* are averages of {settings['mean_of_k']} random checkpoints")
    parts.append("*gaussian* are samples of a per-coordinate Gaussian fitted to the checkpoints")
    return "; ".join(parts) + f" ({settings.get('n', '?')} models each)."


def plot_accuracy_histogram(models: list[dict], path: Path) -> None:
    """One panel per group of several models, sharing the accuracy axis; the ensemble as a dashed line."""
    groups = list(dict.fromkeys(m["group"] for m in models))
    panels = [g for g in groups if sum(m["group"] == g for m in models) > 1]
    fig, axes = plt.subplots(len(panels), 1, figsize=(6.5, 0.5 + 1.1 * len(panels)), sharex=True, squeeze=False)
    accuracy = {g: [100 * m["test_accuracy"] for m in models if m["group"] == g] for g in groups}
    bins = _accuracy_bins(np.concatenate([accuracy[g] for g in panels]))
    for ax, group in zip(axes[:, 0], panels, strict=True):
        ax.hist(accuracy[group], bins=bins, color=group_color(group, groups))
        if "ensemble" in accuracy:
            ax.axvline(accuracy["ensemble"][0], color=GROUP_COLORS["ensemble"], ls="--", lw=1)
        ax.set_ylabel(f"{group}\n({len(accuracy[group])})", rotation=0, ha="right", va="center", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("test accuracy (%)" + ("; dashed: ensemble" if "ensemble" in accuracy else ""))
    _save_figure(fig, path)


def _accuracy_bins(values: np.ndarray, most: int = 60) -> np.ndarray:
    """Bin edges: one bin per possible accuracy (a multiple of 1/n_test) when there are few, else `most` bins."""
    distinct = np.unique(values)
    step = np.diff(distinct).min() if len(distinct) > 1 else 1.0
    if (distinct[-1] - distinct[0]) / step > most:
        return np.histogram_bin_edges(values, bins=most)
    return np.arange(distinct[0] - step / 2, distinct[-1] + step, step)


def plot_accuracy_vs_similarity(models: list[dict], similarity: dict, path: Path) -> None:
    """Test accuracy against max IoU to any original (the paper's central scatter): every model on the left,
    each group's mean ± std on the right.

    The y axis spans the originals' and generated models' accuracies (with a margin); models far below it
    are drawn on its lower edge as triangles, so a weak baseline does not flatten the interesting region.
    """
    groups = list(similarity["max_iou_to_original"])
    iou = {g: np.array(similarity["max_iou_to_original"][g]["values"]) for g in groups}
    accuracy = {g: np.array([100 * m["test_accuracy"] for m in models if m["group"] == g]) for g in groups}
    focus = np.concatenate([accuracy[g] for g in ("original", "generated") if g in accuracy] or list(accuracy.values()))
    low, high = focus.min(), focus.max()
    bottom = low - 0.5 * max(high - low, 0.5)
    fig, (ax, means) = plt.subplots(1, 2, figsize=(12, 5), sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    on_top = [g for g in groups if g not in ("original", "generated")] + [g for g in ("original", "generated")
                                                                         if g in groups]
    for group in on_top:
        x, y, color = iou[group], accuracy[group], group_color(group, groups)
        single, main = len(x) == 1, group in ("original", "generated")
        inside = y >= bottom
        ax.scatter(x[inside], y[inside], s=150 if single else 18 if main else 10, marker="*" if single else "o",
                   alpha=1 if single else 0.7 if main else 0.45, color=color, label=f"{group} ({len(x)})",
                   edgecolors="k" if single else "none")
        if (~inside).any():
            ax.scatter(x[~inside], np.full((~inside).sum(), bottom), marker="v", s=16, alpha=0.6, color=color)
        means.errorbar(x.mean(), y.mean(), xerr=x.std(), yerr=y.std(), fmt="*" if single else "o", ms=10,
                       color=color, mec="k", capsize=3, label=group)
    ax.set_ylim(bottom - 0.1 * (high - bottom), high + 0.1 * (high - bottom))
    ax.set(xlabel="max IoU of wrong predictions to any original", ylabel="test accuracy (%)", title="every model")
    means.set(xlabel="max IoU to any original", title="group mean ± std")
    for a in (ax, means):
        a.grid(alpha=0.3)
    means.legend(*ax.get_legend_handles_labels(), fontsize=7, markerscale=1.5, loc="upper left")
    _save_figure(fig, path)


def plot_iou_bars(mean_iou: dict[str, float], path: Path) -> None:
    """Mean IoU within each group (solid) and between each group and the originals (hatched)."""
    pairs = [(pair, *_split_pair(pair)) for pair in mean_iou]  # (key, group, between)
    groups = list(dict.fromkeys(group for _, group, _ in pairs))
    fig, ax = plt.subplots(figsize=(7, 0.6 + 0.32 * len(pairs)))
    for row, (pair, group, between) in enumerate(pairs):
        ax.barh(row, mean_iou[pair], color=group_color(group, groups), hatch="//" if between else None,
                edgecolor="k", lw=0.5)
        ax.text(mean_iou[pair] + 0.01, row, f"{mean_iou[pair]:.3f}", va="center", fontsize=7)
    ax.set_yticks(range(len(pairs)), [f"{g} vs originals" if between else f"within {g}" for _, g, between in pairs],
                  fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1.1), xlabel="mean IoU of wrong-prediction sets")
    _save_figure(fig, path)


def _split_pair(pair: str) -> tuple[str, bool]:
    """A similarity_summary key: 'g-g' -> (g, False), within g; 'original-g' -> (g, True), g vs originals."""
    first, second = pair.split("-", 1)
    return second, first != second


def plot_tsne(models: list[dict], latents: np.ndarray, path: Path, seed: int = 0) -> None:
    """t-SNE of the latents [M, d] of the original, generated and noise-added models."""
    groups = list(dict.fromkeys(m["group"] for m in models))
    noise = [g for g in groups if g.startswith("noise@")]
    shown = noise[::-1] + [g for g in ("original", "generated") if g in groups]  # drawn in this order
    rows = np.array([i for i, m in enumerate(models) if m["group"] in shown])
    points = np.asarray(latents, dtype=np.float64)[rows]
    perplexity = min(30.0, (len(points) - 1) / 3)
    xy = TSNE(perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)  # [len(rows), 2]
    labels = np.array([models[i]["group"] for i in rows])
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for group in shown:
        main = group in ("original", "generated")
        ax.scatter(*xy[labels == group].T, s=14 if main else 8, alpha=0.8 if main else 0.4, label=group,
                   color=group_color(group, groups), edgecolors="none")
    ax.set(xticks=[], yticks=[], title="t-SNE of autoencoder latents")
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], fontsize=7, markerscale=1.5)
    _save_figure(fig, path)


def plot_similarity_vs_k(runs: list[dict], path: Path) -> None:
    """Each group's mean max IoU to the originals against the number of checkpoints K, one point per run."""
    runs = sorted(runs, key=lambda r: r["summary"]["original"]["count"])
    groups = list(dict.fromkeys(g for r in runs for g in r["similarity"]["max_iou_to_original"]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for group in groups:
        points = [(r["summary"]["original"]["count"], r["similarity"]["max_iou_to_original"][group]["mean"])
                  for r in runs if group in r["similarity"]["max_iou_to_original"]]
        ax.plot(*zip(*points, strict=True), marker="o", label=group, color=group_color(group, groups))
    ax.set(xlabel="checkpoints K", ylabel="mean max IoU to originals", xscale="log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
