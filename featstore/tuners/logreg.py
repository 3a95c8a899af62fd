"""scikit-learn logistic regression baseline, C chosen on a validation split."""

from __future__ import annotations

from typing import Any

import numpy as np

from featstore.errors import DataError
from featstore.tuners.base import NotFittedError, as_arrays
from featstore.utils.validation import INF, Interval, ListOf, OrNone, check_all


class LogRegBaseline:
    """L-BFGS logistic regression on standardised features; the inverse regularisation
    strength C is picked from ``Cs`` on a stratified validation split carved from the
    training data (never the test split), then refit on all of it (as CLIP_benchmark
    and the CLIP paper do)."""

    _constraints = {"Cs": ListOf(Interval(float, 0, INF, "neither")),
                    "val_fraction": Interval(float, 0, 1, "neither"),
                    "max_iter": Interval(int, 1, INF, "left"),
                    "random_state": OrNone(Interval(int, 0, INF, "left"))}

    def __init__(self, *, Cs: tuple[float, ...] = tuple(10.0 ** np.arange(-4, 3)),
                 val_fraction: float = 0.2, max_iter: int = 1000, random_state: int | None = 0):
        self.Cs, self.val_fraction, self.max_iter, self.random_state = Cs, val_fraction, max_iter, random_state

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {"Cs": list(self.Cs), "val_fraction": self.val_fraction,
                "max_iter": self.max_iter, "random_state": self.random_state}

    def set_params(self, **p: Any) -> "LogRegBaseline":
        for k, v in p.items():
            setattr(self, k, v)
        return self

    def _validate_params(self) -> None:
        """The same rules and message shape as the other tuners."""
        check_all(self, self._constraints, owner="LogRegBaseline", noun="parameter")

    def fit(self, X: Any, y: Any = None) -> "LogRegBaseline":
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        self._validate_params()
        X, y, _ = as_arrays(X, y)
        if X.ndim == 3:
            X = X[:, 0]
        if y is None or y.dtype.kind not in "iub":
            raise DataError("LogRegBaseline needs integer class labels.")
        self.classes_ = np.unique(y)
        xtr, xval, ytr, yval = train_test_split(X, y, test_size=self.val_fraction, stratify=y,
                                                random_state=self.random_state)

        def model(c: float):
            return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=self.max_iter))

        self.val_scores_ = {float(c): float(model(c).fit(xtr, ytr).score(xval, yval)) for c in self.Cs}
        self.C_ = max(self.val_scores_, key=lambda c: (self.val_scores_[c], -c))
        self.model_ = model(self.C_).fit(X, y)
        self.n_features_in_ = X.shape[1]
        return self

    def predict(self, X: Any) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise NotFittedError("This LogRegBaseline instance is not fitted yet.")
        X, _, _ = as_arrays(X)
        return self.model_.predict(X[:, 0] if X.ndim == 3 else X)

    def predict_proba(self, X: Any) -> np.ndarray:
        X, _, _ = as_arrays(X)
        return self.model_.predict_proba(X[:, 0] if X.ndim == 3 else X)

    def score(self, X: Any, y: Any = None) -> float:
        Xa, ya, _ = as_arrays(X, y)
        return float((self.predict(Xa) == ya).mean())

    def transform(self, X: Any) -> np.ndarray:
        X, _, _ = as_arrays(X)
        return X
