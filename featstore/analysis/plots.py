"""Plots of the analysis: spectra in the paper's three groups (top 20, 20–500, the
rest), and dot plots with error bars for comparing methods."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np


def plot_spectra(spectra: Sequence[tuple[str, Sequence[float]]], path: str | Path,
                 title: str = "Singular value spectrum") -> Path:
    """One figure, three panels; each spectrum normalised to Σσ = 1 so they compare."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [("top 20", 0, 20), ("20 – 500", 20, 500), ("500 – end", 500, None)]
    longest = max(len(s) for _, s in spectra)
    groups = [g for g in groups if g[1] < longest]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.6), squeeze=False)
    for ax, (label, lo, hi) in zip(axes[0], groups):
        for name, sigma in spectra:
            s = np.asarray(sigma, dtype=float)
            p = s / s.sum()
            idx = np.arange(len(p))[lo:hi]
            if len(idx):
                ax.plot(idx + 1, p[lo:hi], marker="o" if label == "top 20" else None,
                        markersize=3, label=name)
        ax.set_title(label)
        ax.set_xlabel("index i")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("σ_i / Σσ")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def axis_start_note(lo: float) -> str:
    """Words for an axis that does not start at 0, so no reader takes a gap for a ratio."""
    return f"axis starts at {lo:.4g}" if lo > 0 else ""


def dot_grid(rows: Sequence[dict[str, Any]], path: str | Path, xlabel: str) -> Path:
    """Horizontal dot plots with error bars, one panel per (row, column), so that
    differences well under a point stay visible.

    ``rows``: one dict per figure row, ``{"title": str, "labels": [str, ...], "cols":
    [{"title": str, "means": [...], "stds": [...]}, ...]}``; ``labels`` name the dots
    (top to bottom) and are shared by the row's panels; a ``None`` std (one seed) draws
    a hollow dot without a bar. Each panel's x-range starts near its data, and its
    axis label says where.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = max(len(r["cols"]) for r in rows)
    longest = max((len(lab) for r in rows for lab in r["labels"]), default=10)
    heights = [0.32 * len(r["labels"]) + 1.3 for r in rows]
    fig, axes = plt.subplots(len(rows), ncols, squeeze=False, layout="constrained",
                             figsize=(0.065 * longest + 3.3 * ncols, sum(heights)),
                             gridspec_kw={"height_ratios": heights})
    for ax_row, row in zip(axes, rows):
        y = np.arange(len(row["labels"]))[::-1]  # the first label on top
        for j, ax in enumerate(ax_row):
            if j >= len(row["cols"]):
                ax.set_axis_off()
                continue
            _dot_panel(ax, y, row["cols"][j])
            ax.set_xlabel(f"{xlabel} — {axis_start_note(ax.get_xlim()[0])}".rstrip(" —"),
                          fontsize=8)
            ax.set_yticks(y, row["labels"] if j == 0 else [""] * len(y), fontsize=8)
            ax.set_title(f"{row['title']} → {row['cols'][j]['title']}", fontsize=9)
    fig.savefig(Path(path), dpi=120)
    plt.close(fig)
    return Path(path)


def _dot_panel(ax: Any, y: np.ndarray, col: dict[str, Any]) -> None:
    means = np.array([np.nan if m is None else m for m in col["means"]], dtype=float)
    stds = np.array([np.nan if s is None else s for s in col["stds"]], dtype=float)
    have = ~np.isnan(means)
    lo = np.nanmin(np.where(np.isnan(stds), means, means - stds)[have], initial=np.inf)
    hi = np.nanmax(np.where(np.isnan(stds), means, means + stds)[have], initial=-np.inf)
    if not np.isfinite(lo):
        ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        return
    span = max(hi - lo, 1.0)
    # start at a round number (a half point) below the data; room on the right for the values
    ax.set_xlim(np.floor(2 * (lo - 0.15 * span)) / 2, hi + 0.45 * span)
    for yi, m, s in zip(y, means, stds):
        if np.isnan(m):
            continue
        one_seed = np.isnan(s)
        ax.errorbar(m, yi, xerr=None if one_seed else s, fmt="o", capsize=3, color="C0",
                    markerfacecolor="white" if one_seed else "C0", markersize=5)
        ax.annotate(f"{m:.2f}" + (" (1 seed)" if one_seed else f" ± {s:.2f}"),
                    (m if one_seed else m + s, yi), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.set_ylim(y.min() - 0.6, y.max() + 0.6)
    ax.grid(axis="x", alpha=0.3)
