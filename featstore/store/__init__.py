"""Feature stores: one feature set per Zarr group or HDF5 file, and roots that hold many.

Each format is a backend (``_zarr.py``, ``_hdf5.py``, listed in :mod:`.backends`) that
alone knows its files; everything else asks its class methods (:mod:`.formats`).
Writers hold the key's lease with :func:`featstore.store.lease.hold_lease`.

>>> from featstore import open_store
>>> with open_store("features/3fa2c1d09b7e4a55.zarr") as fs:   # doctest: +SKIP
...     X, y = fs.load_features(), fs.labels
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import ConfigError, DataError, StoreIncompleteError
from featstore.store import schema
from featstore.store._base import FeatureStore, Mode
from featstore.store.backends import BACKENDS, backend_for, backend_named
from featstore.store.integrity import StoreDamagedError, VerifyReport, default_verify_reads
from featstore.store.root import Root, resolve_store_path

from featstore.store import location  # noqa: E402  (featstore.store.location: local paths and URLs)

__all__ = ["FeatureStore", "VerifyReport", "StoreDamagedError", "Root", "open_store",
           "create_store", "BACKENDS", "backend_for", "backend_named", "location"]

_MODES = ("r", "r+", "a", "w", "w-")


def open_store(path: str | Path, mode: Mode = "r", *, allow_incomplete: bool = False,
               allow_damaged: bool = False, verify_reads: bool | None = None) -> FeatureStore:
    """Open a feature set for reading (``"r"``) or for resuming a write (``"r+"``/``"a"``).

    Parameters
    ----------
    path : str or Path
        A ``.zarr`` folder or ``.h5`` file, or ``ROOT/KEY_PREFIX`` naming one in a root.
    mode : {"r", "r+", "a"}
        Access mode, as in zarr and h5py. New stores are made by :func:`create_store`
        (which ``featstore extract`` calls), so ``"w"`` and ``"w-"`` are refused here.
    allow_incomplete : bool
        Open a store whose extraction never finished. Its unwritten rows read as 0.
    allow_damaged : bool
        Skip the checks made on open (every array present and shaped as the metadata
        says; for a complete set read with ``"r"``, every committed chunk file present),
        so that :meth:`FeatureStore.verify` can report on a damaged set.
    verify_reads : bool, optional
        Hash every whole-chunk read of ``features`` and every read of ``valid``,
        ``labels`` and ``sample_ids``, and compare with the recorded sha256 (a mismatch
        raises StoreCorruptError). Default: on, unless the environment variable
        ``FEATSTORE_VERIFY_READS`` is ``0``. Reads of rows that are not whole chunks
        are never hashed. docs/storage.md measures the cost.

    Raises
    ------
    StoreNotFoundError, StoreIncompleteError, SchemaVersionError, StoreCorruptError
    (StoreDamagedError, its subclass, when chunk files or bytes differ from the records)
    """
    if mode not in _MODES:
        raise ConfigError(f"The 'mode' parameter of open_store must be one of {_MODES}. Got {mode!r} instead.")
    if mode in ("w", "w-"):
        raise ConfigError(
            f"open_store does not create stores (mode={mode!r}); use featstore.create_store "
            "or `featstore extract`."
        )
    path = resolve_store_path(path)
    backend = backend_for(path)
    store = backend.open(path, "r" if mode == "r" else "r+")
    store.verify_reads = default_verify_reads() if verify_reads is None else bool(verify_reads)
    try:
        if not store.complete and not allow_incomplete:
            raise StoreIncompleteError(
                f"{path} is incomplete: its extraction was interrupted or is still running. "
                "Rerun the same `featstore extract` command to resume it, or remove it with "
                "`featstore rm`. (Python: open_store(..., allow_incomplete=True) reads it anyway.)"
            )
        if not allow_damaged:
            store.check_layout()
            if store.complete and mode == "r":
                # A writer (resume, repair) recomputes missing chunks instead.
                store.check_files()
    except BaseException:
        store.close()
        raise
    return store


def create_store(path: str | Path, **kwargs: Any) -> FeatureStore:
    """Create an empty, incomplete feature set sized for all its rows (used by extract).

    ``path`` is the finished set's path; the set is created at the backend's working
    path for it (an HDF5 set appears under its final name only once complete). The
    digests of the labels and sample ids are recorded in the metadata
    (``arrays_sha256``) and checked against what was written.
    """
    backend = backend_for(path)
    path = backend.working_path(path)
    labels = kwargs.get("labels")
    kwargs["metadata"] = {**kwargs["metadata"], schema.ARRAYS_SHA256: {
        schema.LABELS: None if labels is None else schema.array_digest(np.asarray(labels)),
        schema.SAMPLE_IDS: schema.ids_digest(kwargs["sample_ids"]),
    }}
    store = backend.create(path, **kwargs)
    try:
        store.labels, store.sample_ids  # read back: checked against the digests just made
    except StoreDamagedError as err:
        store.close()
        raise DataError(
            f"The {err.array} written to {path} read back differently (values the "
            f"{backend.format} format cannot hold, such as ids with NUL characters); fix "
            "the data set's ids or labels.") from err
    return store
