"""The estimators' parameter and fitted-state checks: scikit-learn's own (its
``_parameter_constraints`` machinery and ``check_is_fitted``), raising errors that are
both scikit-learn's and featstore's, in featstore's one message shape::

    The 'lr' parameter of NMTune must be a float in (0, inf). Got -1 instead.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils._param_validation import InvalidParameterError as SklearnInvalidParameterError
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from sklearn.utils.validation import check_is_fitted

from featstore.errors import ConfigError, FeatstoreError
from featstore.utils import validation


class NotFittedError(FeatstoreError, SklearnNotFittedError):
    """predict/transform/score called before fit (scikit-learn's NotFittedError too)."""


class InvalidParameterError(ConfigError, SklearnInvalidParameterError):
    """A tuner parameter has a bad value: scikit-learn's InvalidParameterError (what
    its suite and callers catch) and featstore's ConfigError (so the CLI prints the
    message without a traceback)."""


def choices(*names: str) -> StrOptions:
    """``StrOptions`` that keeps ``names`` in this order (scikit-learn takes a set,
    whose order changes from one process to the next)."""
    return StrOptions(dict.fromkeys(names).keys())  # type: ignore[arg-type]


def check_params(est: Any) -> None:
    """Check ``est``'s parameters against its ``_parameter_constraints`` with
    scikit-learn; a bad one raises :class:`InvalidParameterError` in featstore's words."""
    params = est.get_params(deep=False)
    try:
        validate_parameter_constraints(est._parameter_constraints, params,
                                       caller_name=type(est).__name__)
    except SklearnInvalidParameterError as err:
        for name, constraints in est._parameter_constraints.items():
            try:  # which parameter: the first that fails alone
                validate_parameter_constraints({name: constraints}, {name: params[name]},
                                               caller_name=type(est).__name__)
            except SklearnInvalidParameterError:
                words = " or ".join(_words(c) for c in constraints)
                raise parameter_error(est, name, words) from None
        raise InvalidParameterError(str(err)) from None


def parameter_error(est: Any, name: str, expected: str) -> InvalidParameterError:
    return InvalidParameterError(f"The '{name}' parameter of {type(est).__name__} must be "
                                 f"{expected}. Got {validation.show(getattr(est, name))} "
                                 "instead.")


def check_fitted(est: Any) -> None:
    """:class:`NotFittedError` unless ``est`` was fitted (or loaded)."""
    try:
        check_is_fitted(est, "model_")
    except SklearnNotFittedError as err:
        raise NotFittedError(str(err)) from None


def _words(c: Any) -> str:
    """A scikit-learn constraint in the words of :mod:`featstore.utils.validation`."""
    if isinstance(c, Interval):
        low = -validation.INF if c.left is None else c.left
        high = validation.INF if c.right is None else c.right
        kind = int if c.type is Integral else float
        return str(validation.Interval(kind, low, high, c.closed))
    if isinstance(c, StrOptions):
        return str(validation.Options(*c.options))
    if c is None:
        return "None"
    if isinstance(c, type):
        return f"a {c.__name__}"
    return {"boolean": "a bool", "array-like": "an array-like"}.get(c, str(c))
