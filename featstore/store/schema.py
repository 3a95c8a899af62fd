"""The on-disk schema: array names, metadata layout and the checks made on open.

See docs/store-format.md for the specification a reader can be written from.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..errors import SchemaVersionError, StoreCorruptError

#: Bumped on any change a reader of the previous version could misread.
SCHEMA_VERSION = 1
#: Name of the group attribute holding featstore's metadata (a JSON object; a JSON
#: string in HDF5, which has no nested attributes).
META_ATTR = "featstore"

FEATURES = "features"        # (N, D) or (N, K, D) floats
LABELS = "labels"            # (N,) int64 classes or float32 targets (optional)
SAMPLE_IDS = "sample_ids"    # (N,) unique strings
VALID = "valid"              # (N,) bool: False where the sample failed to load
CHUNK_SHA256 = "chunk_sha256"  # (n_chunks,) hex sha256 of each row chunk, written after it

DIMS_2D = ("sample", "feature")
DIMS_3D = ("sample", "view", "feature")


def features_layout(n: int, n_features: int, n_views: int, chunk_rows: int
                    ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[str, ...]]:
    """Shape, chunk shape and dimension names of the features array."""
    rows = min(chunk_rows, max(n, 1))
    if n_views > 1:
        return (n, n_views, n_features), (rows, n_views, n_features), DIMS_3D
    return (n, n_features), (rows, n_features), DIMS_2D


def n_chunks(n_rows: int, chunk_rows: int) -> int:
    return -(-n_rows // chunk_rows)


def chunk_bounds(index: int, n_rows: int, chunk_rows: int) -> tuple[int, int]:
    start = index * chunk_rows
    return start, min(start + chunk_rows, n_rows)


def chunk_digest(features: np.ndarray, valid: np.ndarray) -> str:
    """sha256 of one chunk's decoded bytes (features then valid), so it is codec-free."""
    h = hashlib.sha256()
    h.update(str(features.dtype).encode() + str(features.shape).encode())
    h.update(np.ascontiguousarray(features).tobytes())
    h.update(np.ascontiguousarray(valid, dtype=np.bool_).tobytes())
    return h.hexdigest()


def check_metadata(meta: Any, where: str) -> dict[str, Any]:
    """Validate the metadata read from ``where`` and return it."""
    if not isinstance(meta, dict) or "schema_version" not in meta:
        raise StoreCorruptError(
            f"{where} is not a featstore feature set: its '{META_ATTR}' attribute is missing "
            "or has no schema_version. Point at a folder written by `featstore extract`."
        )
    version = meta["schema_version"]
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} uses store schema {version}, but this featstore reads schema "
            f"{SCHEMA_VERSION} and older. Upgrade featstore: pip install -U featstore."
        )
    for field in ("key", "n_samples", "n_features", "chunk_rows", "complete"):
        if field not in meta:
            raise StoreCorruptError(f"{where}: metadata lacks the field {field!r}.")
    return meta


def as_str_list(values: Any) -> list[str]:
    """Strings from a zarr StringDType, h5py bytes/object or numpy unicode array."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).tolist()]
