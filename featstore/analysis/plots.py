"""Spectrum plots in the paper's three groups (top 20, 20–500, the rest)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

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
