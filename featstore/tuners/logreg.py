"""scikit-learn logistic regression baseline, C chosen on a validation split."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.utils._param_validation import Interval

from featstore.errors import DataError
from featstore.tuners.checks import check_fitted, check_params, parameter_error
from featstore.tuners.inputs import (check_features, check_targets, is_store, store_features,
                                     store_labels)


class LogRegBaseline(ClassifierMixin, TransformerMixin, BaseEstimator):
    """L-BFGS logistic regression on standardised features; the inverse regularisation
    strength C is picked from ``Cs`` on a stratified validation split carved from the
    training data (never the test split), then refit on all of it (as CLIP_benchmark
    and the CLIP paper do).

    A classifier only: labels of any kind (strings, integers, 0.0/1.0 floats) are
    classes; continuous targets are refused. X is an array-like (N, D), (N, K, D) (the
    first view is used) or an open store (loaded into memory). ``transform`` returns
    the features unchanged, as float32 (the "tuned features" of a method that tunes
    none).

    Parameters
    ----------
    Cs : array-like of float
        Candidate values of C (> 0), 10^-4 ... 10^2 by default.
    val_fraction : float
        Share of the training rows held out (stratified) to choose C, in (0, 1).
    max_iter : int
        L-BFGS iterations (>= 1).
    random_state : int or None
        Seeds the validation split.

    Attributes
    ----------
    classes_, n_features_in_, feature_names_in_ (DataFrame input), C_ (the chosen C),
    val_scores_ (validation accuracy per C), model_ (the refitted scikit-learn pipeline),
    n_iter_ (its L-BFGS iterations).

    Examples
    --------
    >>> import numpy as np
    >>> from featstore.tuners import LogRegBaseline
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 8)); y = np.where(X[:, 0] > 0, "pos", "neg")
    >>> LogRegBaseline().fit(X, y).score(X, y) > 0.9
    True
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "Cs": ["array-like"],  # of floats in (0, inf): checked in _validate_params
        "val_fraction": [Interval(Real, 0, 1, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, *, Cs: Any = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0),
                 val_fraction: float = 0.2, max_iter: int = 1000, random_state: int | None = 0):
        self.Cs = Cs
        self.val_fraction = val_fraction
        self.max_iter = max_iter
        self.random_state = random_state

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, K, D): the first view is used
        tags.transformer_tags.preserves_dtype = ["float32"]  # transform gives float32 always
        return tags

    def _validate_params(self) -> None:
        """scikit-learn's checks, and that ``Cs`` holds positive finite numbers; raises
        :class:`~featstore.tuners.checks.InvalidParameterError` (also a ConfigError)."""
        check_params(self)
        try:
            cs = np.asarray(self.Cs, dtype=float)
            ok = cs.ndim == 1 and len(cs) > 0 and bool((np.isfinite(cs) & (cs > 0)).all())
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise parameter_error(self, "Cs", "a non-empty list of floats in (0, inf)")

    def _features(self, X: Any, *, reset: bool) -> np.ndarray:
        if is_store(X):
            X = store_features(X)
            if reset:
                self.__dict__.pop("feature_names_in_", None)
                self.n_features_in_ = X.shape[-1]
            elif X.shape[-1] != self.n_features_in_:
                raise DataError(f"X has {X.shape[-1]} features, but LogRegBaseline is "
                                f"expecting {self.n_features_in_} features as input.")
        else:
            X = check_features(self, X, reset=reset)
        return X[:, 0] if X.ndim == 3 else X

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> "LogRegBaseline":
        from sklearn.linear_model import LogisticRegression
        from sklearn.model_selection import train_test_split
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if y is None and not is_store(X):
            raise DataError("LogRegBaseline requires y to be passed, but the target y is None: "
                            "pass labels y, or fit on a store with labels.")
        y = store_labels(X, y) if is_store(X) else y
        X = self._features(X, reset=True)
        _, y = check_targets(y, len(X), "classification", can_regress=False)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise DataError(f"Expected at least 2 classes in y, got {len(self.classes_)} class.")
        try:
            xtr, xval, ytr, yval = train_test_split(X, y, test_size=self.val_fraction, stratify=y,
                                                    random_state=self.random_state)
        except ValueError as err:
            raise DataError(f"LogRegBaseline cannot hold out a stratified validation split "
                            f"of {self.val_fraction} of {len(y)} samples to choose C ({err}). "
                            "Give it more samples per class, or a larger val_fraction.") from None

        def model(c: float) -> Any:
            return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=self.max_iter))

        cs = [float(c) for c in np.asarray(self.Cs, dtype=float)]
        self.val_scores_ = {c: float(model(c).fit(xtr, ytr).score(xval, yval)) for c in cs}
        self.C_ = max(self.val_scores_, key=lambda c: (self.val_scores_[c], -c))
        self.model_ = model(self.C_).fit(X, y)
        self.n_iter_ = self.model_[-1].n_iter_  # L-BFGS iterations of the final fit
        return self

    def _fitted(self, X: Any) -> np.ndarray:
        check_fitted(self)
        return self._features(X, reset=False)

    def predict(self, X: Any) -> np.ndarray:
        X = self._fitted(X)
        return self.model_.predict(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        X = self._fitted(X)
        return self.model_.predict_proba(X)

    def decision_function(self, X: Any) -> np.ndarray:
        """Log-odds of ``classes_[1]`` (N,) for two classes, else (N, n_classes)."""
        X = self._fitted(X)
        return self.model_.decision_function(X)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy on X, y; for a store, y defaults to its labels."""
        if y is None and is_store(X):
            y = store_labels(X)
        return super().score(X, y, sample_weight=sample_weight)

    def transform(self, X: Any) -> np.ndarray:
        """The features themselves, float32 (the first view of K)."""
        return self._fitted(X)
