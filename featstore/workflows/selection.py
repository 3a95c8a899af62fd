"""Model selection for `featstore tune --grid ... --select-on val`: the grid's points, a
validation split carved from the training store (or another store), and the choice.

The test and OOD stores are never read here: the choice is made on validation scores
only, and `tune` evaluates the chosen heads on them afterwards.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from featstore.errors import ConfigError, DataError
from featstore.utils.validation import Interval, Options, check

#: Where a grid is selected: a validation split (carved from train, or ``--val STORE``).
SELECT_ON = ("val",)
#: Metrics a selection may use, and whether larger is better.
METRICS = {"accuracy": True, "macro_f1": True, "mean_per_class_accuracy": True, "mcc": True,
           "pearson": True, "spearman": True, "mse": False}
REGRESSION_METRICS = ("pearson", "spearman", "mse")
VAL_FRACTION = Interval(float, 0, 1, "neither")
#: The seed of the carved split: one split for every seed and grid point.
SPLIT_SEED = 0


def check_selection(grid: dict[str, list[Any]] | None, select_on: str | None, val: str | None,
                    val_fraction: float, select_metric: str, data_seed: int | None) -> None:
    """Refuse inconsistent selection options before anything is read."""
    if select_on is None:
        given = [flag for flag, v in (("--grid", grid), ("--val", val),
                                      ("--data-seed", data_seed)) if v]
        if given:
            raise ConfigError(f"{' and '.join(given)} need(s) --select-on val: a grid is chosen "
                              "on a validation split, never on the test set. Add --select-on val "
                              "(it carves --val-fraction of the training store, or uses --val "
                              "STORE), or run each point as its own `featstore sweep` run.")
        return
    check("select_on", select_on, Options(*SELECT_ON), owner="tune")
    check("val_fraction", val_fraction, VAL_FRACTION, owner="tune")
    check("select_metric", select_metric, Options(*METRICS), owner="tune")
    if data_seed is not None:
        check("data_seed", data_seed, Interval(int, 0, float("inf"), "left"), owner="tune")


def parse_grid_option(items: tuple[str, ...] | list[str]) -> dict[str, list[Any]]:
    """``["lr=0.001,0.01", "weight_decay=0,1e-4"]`` -> ``{"lr": [0.001, 0.01], ...}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name or not values.strip():
            raise ConfigError(f"--grid {item!r}: expected NAME=V1,V2,..., e.g. --grid "
                              "lr=0.001,0.01,0.1.")
        if name in grid:
            raise ConfigError(f"--grid gives {name} twice; list all its values in one "
                              f"--grid {name}=V1,V2,...")
        grid[name] = [parse_value(v) for v in values.split(",")]
    return grid


def parse_value(text: str) -> Any:
    """A grid value from the command line: int, float, true/false, none, or a string."""
    t = text.strip()
    low = t.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            return kind(t)
        except ValueError:
            pass
    return t


def grid_points(grid: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given ([{}] for no grid)."""
    if not grid:
        return [{}]
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"The grid gives no values for {name!r}; give a non-empty list.")
    return [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]


def carve(y: np.ndarray, fraction: float, task: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) of a seeded split; stratified by class for classification."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    stratify = y if task != "regression" else None
    if stratify is not None:
        counts = np.unique(y, return_counts=True)[1]
        if counts.min() < 2:
            raise DataError(f"A stratified validation split needs at least 2 samples of every "
                            f"class; the training store has a class with {counts.min()}. "
                            "Pass --val STORE instead, or use a larger training split.")
    try:
        tr, va = train_test_split(idx, test_size=fraction, stratify=stratify,
                                  random_state=SPLIT_SEED)
    except ValueError as err:
        raise DataError(f"Cannot carve a validation split of {fraction:g} from {len(y)} "
                        f"samples: {err} Change --val-fraction or pass --val STORE.") from None
    return np.sort(tr), np.sort(va)


class RowSubset:
    """An open store seen through a subset of its valid rows (``keep``: one bool per
    valid row), for streaming a carved split without loading the store."""

    def __init__(self, store: Any, keep: np.ndarray):
        self._store = store
        valid = np.asarray(store.valid, bool)
        mask = np.zeros(len(valid), bool)
        mask[np.flatnonzero(valid)[keep]] = True
        self.valid = mask

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def choose(scores: list[dict[int, float]], metric: str) -> int:
    """The index of the best point by its mean score over seeds (ties: the first). A
    point whose score is NaN (e.g. the correlation of constant predictions) never wins;
    if every point's is NaN, a DataError says so."""
    means = [float(np.mean(list(s.values()))) for s in scores]
    sign = 1 if METRICS[metric] else -1
    usable = [i for i, m in enumerate(means) if np.isfinite(m)]
    if not usable:
        raise DataError(f"Every grid point's validation {metric} is undefined (NaN): the "
                        "heads predict a constant. Widen the grid (e.g. a smaller "
                        "weight_decay) or choose another --select-metric.")
    return max(usable, key=lambda i: (sign * means[i], -i))
