"""featstore: run each frozen backbone once, keep its features, tune heads on the cache.

Public names are imported lazily so that ``import featstore`` (and the CLI's ``--help``)
stays fast; torch is imported only when a backbone or extraction is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "open_store": "featstore.store",
    "create_store": "featstore.store",
    "FeatureStore": "featstore.store",
    "Root": "featstore.store",
    "extract": "featstore.extract",
    "ExtractConfig": "featstore.extract",
    "ExtractResult": "featstore.extract",
    "create_backbone": "featstore.backbones",
    "list_backbones": "featstore.backbones",
    "Backbone": "featstore.backbones",
    "load_dataset": "featstore.data",
    "list_datasets": "featstore.data",
    "SampleSet": "featstore.data._base",
    "FeatstoreError": "featstore.errors",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'featstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
