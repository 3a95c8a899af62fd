"""Seeded, stratified train/test splits for data sets that ship without one."""

from __future__ import annotations

import numpy as np

from featstore.errors import DataError


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0
                     ) -> dict[str, np.ndarray]:
    """Indices of ``train``, ``test`` and ``all``; each class split in the same proportion.

    Deterministic for a seed; indices are returned sorted (original order kept).
    """
    rng = np.random.default_rng(seed)
    test: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        test += idx[: int(round(len(idx) * test_fraction))].tolist()
    test_idx = np.sort(np.array(test, dtype=np.int64))
    mask = np.ones(len(labels), bool)
    mask[test_idx] = False
    return {"train": np.flatnonzero(mask), "test": test_idx, "all": np.arange(len(labels))}


def pick_split(splits: dict[str, np.ndarray], split: str, name: str) -> np.ndarray:
    if split not in splits:
        raise DataError(
            f"Data set {name!r} has no split {split!r}; it has {', '.join(splits)}. "
            "Pass one of them with --split."
        )
    return splits[split]


def limit_indices(labels: np.ndarray | None, n: int, limit: int, seed: int) -> np.ndarray:
    """A seeded subset of ``limit`` rows, stratified by class when labelled, in order."""
    if limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None or labels.dtype.kind == "f":
        return np.sort(rng.choice(n, size=limit, replace=False))
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / n * limit).astype(int)
    for i in np.argsort(-(counts / n * limit - quota))[: limit - quota.sum()]:
        quota[i] += 1  # largest remainders get the leftover rows
    chosen = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False)
              for c, q in zip(classes, quota) if q]
    return np.sort(np.concatenate(chosen))
