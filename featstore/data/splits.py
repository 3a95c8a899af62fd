"""Seeded, stratified train/test splits for data sets that ship without one, and
seeded subsets (``--limit``)."""

from __future__ import annotations

import numpy as np

from featstore.errors import DataError


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0
                     ) -> dict[str, np.ndarray]:
    """Indices of ``train``, ``test`` and ``all``; each class split in the same proportion.

    The test part holds round(test_fraction * N_c) samples of each class c in total
    (the same sizes whatever the seed), drawn by scikit-learn's stratified shuffle
    split (``train_test_split(stratify=labels)``). Deterministic for a seed; indices
    are returned sorted (original order kept). A fraction too small to put one sample
    in the test part gives an empty one; a split scikit-learn cannot stratify (a class
    with one sample, fewer test or train samples than classes) is a :class:`DataError`.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    counts = np.unique(labels, return_counts=True)[1]
    n_test = int(np.round(counts * test_fraction).sum())
    if n_test in (0, len(labels)):
        test = everything[:0] if n_test == 0 else everything
    else:
        try:
            _, test = train_test_split(everything, test_size=n_test, stratify=labels,
                                       random_state=seed)
        except ValueError as err:  # scikit-learn says which condition failed
            raise DataError(
                f"Cannot make a stratified split of {len(labels)} samples ({len(counts)} "
                f"classes) into {len(labels) - n_test} and {n_test}: {err} Use more samples, "
                "or another fraction.") from None
    test = np.sort(test)
    return {"train": np.setdiff1d(everything, test), "test": test, "all": everything}


def pick_split(splits: dict[str, np.ndarray], split: str, name: str) -> np.ndarray:
    if split not in splits:
        raise DataError(
            f"Data set {name!r} has no split {split!r}; it has {', '.join(splits)}. "
            "Pass one of them with --split."
        )
    return splits[split]


def limit_indices(labels: np.ndarray | None, n: int, limit: int, seed: int) -> np.ndarray:
    """A seeded subset of ``limit`` rows, stratified by class when labelled, in order.

    Each class gets its share of ``limit`` rounded down, and the largest remainders one
    row more. Not scikit-learn's stratified split: that refuses fewer rows than classes
    and classes of one sample, and ``--limit 2`` of a 10-class data set is a fine smoke
    test.
    """
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
