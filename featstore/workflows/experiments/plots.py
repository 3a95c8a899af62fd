"""Plots specific to the experiments (the report module draws the generic ones)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def spectrum_vs_noise(spectra: list[dict[str, Any]], path: Path) -> Path:
    """SVE and LSVR of the raw features against the pre-training noise ratio, one line
    per downstream set and split (the paper's Figure 3/5 quantities)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    series = sorted({(s["dataset"], s["split"]) for s in spectra})
    for ax, metric in zip(axes, ("sve", "lsvr")):
        for ds, split in series:
            pts = sorted((s["noise"], s[metric]) for s in spectra
                         if s["dataset"] == ds and s["split"] == split)
            ax.plot([100 * x for x, _ in pts], [y for _, y in pts], marker="o", label=f"{ds}/{split}")
        ax.set_xlabel("pre-training noise ratio (%)")
        ax.set_ylabel(f"{metric.upper()} of the raw features")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
