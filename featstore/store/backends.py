"""The store backends, and which one a path or a format name means.

Adding a backend: a ``_name.py`` module with a :class:`~featstore.store.FeatureStore`
subclass (its class methods, :class:`~featstore.store.formats.StoreFormat`, describe
its files), listed in :data:`BACKENDS`, and a subclass of the conformance suite in
tests/test_store_conformance.py.
"""

from __future__ import annotations

from typing import Any

from featstore.errors import ConfigError
from featstore.store._base import FeatureStore
from featstore.store._hdf5 import HDF5Store
from featstore.store._zarr import ZarrStore
from featstore.store.location import as_path

#: Every backend; the first is what a path of no known suffix is read as.
BACKENDS: tuple[type[FeatureStore], ...] = (ZarrStore, HDF5Store)

FORMATS = tuple(b.format for b in BACKENDS)


def backend_named(format: str) -> type[FeatureStore]:
    """The backend of a format name (``--format``, ``Entry.format``)."""
    for backend in BACKENDS:
        if backend.format == format:
            return backend
    raise ConfigError(f"The 'format' option must be {' or '.join(map(repr, FORMATS))}. "
                      f"Got {format!r} instead.")


def backend_for(path: Any) -> type[FeatureStore]:
    """The backend a path names by its suffix (``.h5``/``.hdf5`` is HDF5, also while
    being written); Zarr for any other name."""
    for backend in BACKENDS[1:]:
        if backend.final_path(as_path(path)).name.endswith(backend.suffixes):
            return backend
    return BACKENDS[0]


def split_name(name: str) -> tuple[type[FeatureStore], str, bool] | None:
    """``(backend, key, final)`` if a root entry named ``name`` is a feature set's name
    (``final`` is False for the working name of an unfinished one); else None."""
    for backend in BACKENDS:
        parsed = backend.key_of(name)
        if parsed is not None:
            return backend, parsed[0], parsed[1]
    return None


def is_set_name(name: str) -> bool:
    """Whether ``name`` is named like a feature set of some backend."""
    return split_name(name) is not None
