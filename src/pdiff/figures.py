"""The figures of the report and of the ablation reports: one function per figure, each saving a PNG atomically."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402

from .store import save_bytes  # noqa: E402

GROUP_COLORS = {"original": "tab:blue", "heldout": "tab:olive", "ensemble": "tab:green", "generated": "tab:red",
                "finetune": "tab:purple",
                "mean_of_k": "tab:cyan", "gaussian": "tab:pink"}  # noise@<s>: shades of orange, see group_color

def group_color(group: str, groups: list[str]) -> str:
    """A fixed colour per group; the noise groups get darker shades of orange as their strength grows."""
    if group.startswith("noise@"):
        noise = [g for g in groups if g.startswith("noise@")]
        return matplotlib.colors.to_hex(plt.cm.Oranges(0.35 + 0.55 * noise.index(group) / max(1, len(noise) - 1)))
    return GROUP_COLORS.get(group, "tab:gray")


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
    save_figure(fig, path)


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
    save_figure(fig, path)


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
    save_figure(fig, path)


def _split_pair(pair: str) -> tuple[str, bool]:
    """A similarity_summary key: 'g-g' -> (g, False), within g; 'original-g' -> (g, True), g vs originals."""
    first, second = pair.split("-", 1)
    return second, first != second


def plot_tsne(latents: dict[str, np.ndarray], path: Path, seed: int = 0) -> None:
    """t-SNE of the latents (group -> [n, d], or [n, T, c], flattened) of all groups together, one colour per group."""
    groups = list(latents)
    points = np.concatenate([np.asarray(latents[g], dtype=np.float64).reshape(len(latents[g]), -1) for g in groups])
    labels = np.concatenate([[g] * len(latents[g]) for g in groups])
    perplexity = min(30.0, (len(points) - 1) / 3)
    # identical points (K = 1: every latent the same) have no principal axes: PCA's start would be NaN, and NaN
    # crashes scikit-learn's Barnes-Hut code (a segfault, not an error)
    init = "pca" if points.std(0).max() > 1e-9 * max(1.0, np.abs(points).max()) else "random"
    xy = TSNE(perplexity=perplexity, init=init, random_state=seed).fit_transform(points)  # [len(points), 2]
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    for group in groups:
        ax.scatter(*xy[labels == group].T, s=14, alpha=0.8, label=group, color=group_color(group, groups),
                   edgecolors="none")
    ax.set(xticks=[], yticks=[], title="t-SNE of autoencoder latents")
    ax.legend(fontsize=7, markerscale=1.5)
    save_figure(fig, path)


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
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    buffer = _png_bytes(fig)
    plt.close(fig)
    save_bytes(path, buffer)


def _png_bytes(fig) -> bytes:
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=110)
    return out.getvalue()


def plot_forest(comparisons: list[dict], path: Path) -> None:
    """Each group's difference to the originals with its 95% CI, one panel per accuracy metric (in points).

    Descriptive differences (no CI: median, val-chosen best) are drawn as open gray points without bars.
    """
    metrics = [("mean_test_accuracy", "mean"), ("median_test_accuracy", "median"),
               ("best_val_chosen_test_accuracy", "val-chosen best")]
    rows = {m: [c for c in comparisons if c["metric"] == m and c["versus"] == "original"] for m, _ in metrics}
    groups = [c["group"] for c in rows["mean_test_accuracy"]]
    fig, axes = plt.subplots(1, len(metrics), figsize=(12, 0.8 + 0.35 * len(groups)), sharey=True)
    for ax, (metric, title) in zip(axes, metrics, strict=True):
        for y, c in enumerate(rows[metric]):
            if c["ci_low"] is None:
                ax.plot(100 * c["difference"], y, "o", mfc="none", color="tab:gray")
                continue
            color = "tab:gray" if c["verdict"] == "no detectable difference" else group_color(c["group"], groups)
            ax.errorbar(100 * c["difference"], y, xerr=[[100 * (c["difference"] - c["ci_low"])],
                                                         [100 * (c["ci_high"] - c["difference"])]],
                        fmt="o", color=color, capsize=3)
        ax.axvline(0, color="k", lw=0.8)
        ax.set(title=f"{title} - original", xlabel="difference (points), 95% CI")
        ax.grid(alpha=0.3, axis="x")
    axes[0].set_yticks(range(len(groups)), groups, fontsize=8)
    axes[0].invert_yaxis()
    save_figure(fig, path)


def plot_generalization(generalization: dict, path: Path) -> None:
    """Every model's distance to its nearest training checkpoint against its nearest held-out one, per group.

    Below the diagonal a model is nearer the training checkpoints than the held-out ones (memorization).
    """
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    groups = list(generalization)
    for group, figures in generalization.items():
        ax.scatter(figures["distance_to_heldout"], figures["distance_to_training"], s=10, alpha=0.6, label=group,
                   color=group_color(group, groups), edgecolors="none")
    top = max(max(max(f["distance_to_training"]), max(f["distance_to_heldout"])) for f in generalization.values())
    ax.plot([0, top], [0, top], color="k", lw=0.8, ls="--")
    ax.set(xlabel="L2 to the nearest held-out checkpoint", ylabel="L2 to the nearest training checkpoint",
           title="distance to the checkpoints the generator saw vs those it did not")
    ax.legend(fontsize=7, markerscale=1.5)
    save_figure(fig, path)
