"""What the tuners take as X and y, checked: array-likes and torch tensors (through
scikit-learn's ``validate_data``), or an open feature store (labels, task and backbone
from the store); and the task that the targets define.

The task is never guessed from the label dtype: ``task="auto"`` takes a store's recorded
task, else scikit-learn's :func:`~sklearn.utils.multiclass.type_of_target` — only
"continuous" targets (floats that are not all integral) are a regression; strings,
integers, booleans and integral floats (0.0/1.0) are classes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils import check_array, column_or_1d
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import validate_data

from featstore.errors import DataError

TASKS = ("classification", "regression")


def is_store(X: Any) -> bool:
    return hasattr(X, "load_features") and hasattr(X, "metadata")


def store_backbone_key(store: Any) -> str:
    from featstore.utils.keys import backbone_key

    return backbone_key(store.metadata)


def store_task(store: Any) -> str | None:
    """The task the store records for its labels (None if it records none)."""
    task = (store.metadata.get("dataset") or {}).get("task")
    return task if task in TASKS else None


def store_labels(store: Any, y: Any = None) -> np.ndarray:
    """``y`` if given, else the store's labels of its valid rows."""
    if y is not None:
        return np.asarray(_numpy(y))
    if store.labels is None:
        raise DataError(f"{store.path} has no labels; pass y, or extract a labelled split.")
    return np.asarray(store.labels[store.valid])


def store_features(store: Any) -> np.ndarray:
    """The valid rows of a store's features as float32, in memory."""
    X = store.load_features(dtype=np.float32)[store.valid]
    if len(X) == 0:
        raise DataError(f"{store.path} has no valid samples; extract a non-empty split.")
    _check_finite(X, f"{store.path}: features")
    return X


def check_features(est: Any, X: Any, *, reset: bool) -> np.ndarray:
    """Array-like or tensor X as float32 (N, D), or (N, K, D) for K cached views.

    ``reset=True`` (fit) records ``n_features_in_`` (D) and ``feature_names_in_``;
    ``reset=False`` checks X against them. Errors are :class:`DataError` (a
    ``ValueError``) that keep scikit-learn's wording.
    """
    X = _numpy(X)
    if not hasattr(X, "ndim"):  # a list, or an object that only converts (__array__)
        X = np.asarray(X)
    views = X.ndim == 3
    if views:  # (N, K, D): checked as a whole, registered by its first view
        try:
            X = check_array(X, dtype=np.float32, allow_nd=True, ensure_all_finite=False,
                            input_name="X")
        except ValueError as err:
            raise DataError(str(err)) from None
    view = X[:, 0] if views else X
    shape = view.shape
    if not reset and len(shape) == 2 and shape[1] != est.n_features_in_:
        raise DataError(f"X has {shape[1]} features, but {type(est).__name__} is expecting "
                        f"{est.n_features_in_} features as input. Expected {est.n_features_in_} "
                        "features: use features of the backbone and layer the head was "
                        "trained on.")
    try:
        view = validate_data(est, view, reset=reset, dtype=np.float32, ensure_all_finite=False)
    except ValueError as err:
        raise DataError(str(err)) from None
    X = X if views else view
    _check_finite(X, "Features")
    return X


def check_targets(y: Any, n: int, task: str, recorded: str | None = None, *,
                  can_regress: bool = True) -> tuple[str, np.ndarray]:
    """The task (``task`` unless "auto": ``recorded``, else from the targets) and the
    targets as a 1-D array of ``n``; non-finite targets are refused. ``can_regress``:
    whether the estimator has a regression to suggest for continuous targets."""
    y = np.asarray(_numpy(y))
    if y.ndim == 2 and y.shape[1] == 1:
        y = column_or_1d(y, warn=True)  # as scikit-learn: a DataConversionWarning
    if y.shape != (n,):
        raise DataError(f"Expected {n} labels (one per row of X), got shape {y.shape}.")
    _check_finite(y, "Labels")
    if task == "auto":
        task = recorded or ("regression" if type_of_target(y) == "continuous" else "classification")
    if task == "classification":
        try:
            check_classification_targets(y)
        except ValueError as err:
            hint = " Pass task='regression' to fit them." if can_regress else ""
            raise DataError(f"{err}{hint}" if "continuous" in str(err) else str(err)) from None
        return task, y
    try:
        y = y.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError(f"task='regression' needs numeric targets; got {y.dtype} values such "
                        f"as {y[:3].tolist()}. Pass task='classification' (or 'auto') for "
                        "class labels.") from None
    _check_finite(y, "Labels")
    return task, y


def _numpy(a: Any) -> Any:
    """A torch tensor as numpy; anything else unchanged (a DataFrame keeps its names)."""
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else a


def _check_finite(a: np.ndarray, what: str) -> None:
    if a.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(len(a), -1).any(1))[0])
        hint = (" Check the store with `featstore verify`, or re-extract with --dtype float32 "
                "if values overflow float16." if what != "Labels" else
                " Targets must be finite: fix or drop those rows.")
        raise DataError(f"{what} contain NaN or inf (first at row {i}).{hint}")
