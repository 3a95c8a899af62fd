"""Tuners on cached features: LP, MLP tuning, NMTune and a logistic-regression baseline
(scikit-learn estimators), and NMTune's regularisers for any PyTorch loop.

The methods are registered in :mod:`featstore.tuners.registry` (`featstore tune --method`,
the sweep, the report's order and the demo read it). Importing this package never imports
torch: the estimators and losses are loaded on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from featstore.tuners import builtin  # noqa: F401  (registers featstore's methods)
from featstore.tuners.registry import (TunerEntry, create_tuner, get_tuner, list_tuners,
                                       register_tuner, tuner_entries, unregister_tuner)

#: Names loaded on first use -> the module that defines them.
_LAZY = {
    "BaseTuner": "featstore.tuners.base",
    "InvalidParameterError": "featstore.tuners.checks",
    "NotFittedError": "featstore.tuners.checks",
    "LogRegBaseline": "featstore.tuners.logreg",
    "LinearProbe": "featstore.tuners.models",
    "MLPTuner": "featstore.tuners.models",
    "NMTune": "featstore.tuners.models",
    "consistency_loss": "featstore.tuners.regularizers",
    "covariance_loss": "featstore.tuners.regularizers",
    "singular_value_loss": "featstore.tuners.regularizers",
}

__all__ = [*_LAZY, "TunerEntry", "create_tuner", "get_tuner", "list_tuners", "register_tuner",
           "tuner_entries", "unregister_tuner"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'featstore.tuners' has no attribute {name!r}")
