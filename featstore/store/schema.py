"""The on-disk schema: array names, metadata layout and the checks made on open.

See docs/store-format.md for the specification a reader can be written from.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from featstore.utils.keys import content_key
from featstore.errors import SchemaVersionError, StoreCorruptError

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

#: Metadata field with whole-array sha256 digests: ``labels`` (null: no labels array) and
#: ``sample_ids``, written at creation; ``valid``, written when the set is marked
#: complete. Absent from stores written before it existed (their arrays are unchecked).
ARRAYS_SHA256 = "arrays_sha256"

#: A key names a file in a root and a lease folder: a plain name, never a path.
_KEY = re.compile(r"[0-9A-Za-z_-]{1,128}")
_DIGEST = re.compile(r"[0-9a-f]{64}")

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
    # hashlib reads the arrays' buffers directly: no copy of the chunk (2-3x faster).
    h.update(np.ascontiguousarray(features))
    h.update(np.ascontiguousarray(valid, dtype=np.bool_))
    return h.hexdigest()


def array_digest(values: np.ndarray) -> str:
    """sha256 of a whole numeric array (labels, valid): its little-endian dtype string and
    shape, then its C-order little-endian bytes. Codec-free, like :func:`chunk_digest`."""
    values = np.asarray(values)
    little = values.astype(values.dtype.newbyteorder("<"), copy=False)
    h = hashlib.sha256()
    h.update(little.dtype.str.encode() + str(values.shape).encode())
    h.update(np.ascontiguousarray(little))
    return h.hexdigest()


def ids_digest(ids: Any) -> str:
    """sha256 of sample ids: ``str`` and their count, then each id as its UTF-8 length
    (8 bytes, little-endian) followed by its UTF-8 bytes (no two id lists collide)."""
    ids = as_str_list(ids)
    h = hashlib.sha256(f"str{len(ids)}".encode())
    for sid in ids:
        raw = sid.encode("utf-8", "surrogatepass")
        h.update(len(raw).to_bytes(8, "little") + raw)
    return h.hexdigest()


def _int_field(meta: dict[str, Any], name: str, where: str, *, minimum: int) -> None:
    value = meta[name]
    # bool is an int in Python: `true` must not pass for 1
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise StoreCorruptError(
            f"{where}: metadata field {name!r} must be an integer >= {minimum}, got "
            f"{value!r:.80} ({type(value).__name__}). The metadata was altered or not written "
            "by featstore: extract the set again (`featstore extract ... --force`).")


def check_metadata(meta: Any, where: str) -> dict[str, Any]:
    """Validate the metadata read from ``where`` and return it.

    Refuses what a forged or damaged store could use to make featstore divide by zero,
    index wildly or name a path outside its root: wrong types (``true`` is not 1),
    negative or zero sizes, a key that is not a plain name. A newer schema raises
    SchemaVersionError; everything else StoreCorruptError.
    """
    if not isinstance(meta, dict) or "schema_version" not in meta:
        kind = "missing" if meta is None else f"a JSON {type(meta).__name__}"
        raise StoreCorruptError(
            f"{where} is not a featstore feature set: its '{META_ATTR}' metadata is {kind}, "
            "not an object with a schema_version. Point at a folder written by "
            "`featstore extract`."
        )
    version = meta["schema_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StoreCorruptError(
            f"{where}: schema_version must be a positive integer, got {version!r:.80} "
            f"({type(version).__name__}). The metadata was altered or not written by "
            "featstore: extract the set again."
        )
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} uses store schema {version}, but this featstore reads schema "
            f"{SCHEMA_VERSION} and older. Upgrade featstore: pip install -U featstore."
        )
    for name in ("key", "n_samples", "n_features", "chunk_rows", "complete"):
        if name not in meta:
            raise StoreCorruptError(f"{where}: metadata lacks the field {name!r}.")
    _int_field(meta, "n_samples", where, minimum=0)
    _int_field(meta, "n_features", where, minimum=1)
    _int_field(meta, "chunk_rows", where, minimum=1)
    if meta.get("n_views") is not None:
        _int_field(meta, "n_views", where, minimum=1)
    if not isinstance(meta["key"], str) or not _KEY.fullmatch(meta["key"]):
        raise StoreCorruptError(
            f"{where}: metadata key {str(meta['key'])[:80]!r} is not a content key (letters, "
            "digits, '-' or '_'; featstore writes 24 hex characters). Extract the set again.")
    if not isinstance(meta["complete"], bool):
        raise StoreCorruptError(
            f"{where}: metadata field 'complete' must be true or false, got "
            f"{meta['complete']!r:.80}. Extract the set again.")
    for section in ("backbone", "dataset", "views", "extraction", "versions", "key_inputs"):
        if meta.get(section) is not None and not isinstance(meta[section], dict):
            raise StoreCorruptError(
                f"{where}: metadata field {section!r} must be a JSON object, got "
                f"{type(meta[section]).__name__}. Extract the set again.")
    digests = meta.get(ARRAYS_SHA256)
    if digests is not None and not (isinstance(digests, dict) and all(
            v is None or (isinstance(v, str) and _DIGEST.fullmatch(v))
            for v in digests.values())):
        raise StoreCorruptError(f"{where}: metadata field {ARRAYS_SHA256!r} must map array "
                                "names to sha256 hex digests. Extract the set again.")
    inputs = meta.get("key_inputs")
    if inputs and content_key(inputs) != meta["key"]:
        # A set renamed, or forged in a pack, under another key's name would otherwise be
        # served as that key's cache hit: the key is the hash of the recorded inputs.
        raise StoreCorruptError(
            f"{where}: a forged or renamed set: its key {meta['key']} is not the hash of the "
            f"inputs its metadata records ({content_key(inputs)}). Do not use it; remove it "
            "with `featstore rm` and extract (or ask for) the set again.")
    return meta


def as_str_list(values: Any) -> list[str]:
    """Strings from a zarr StringDType, h5py bytes/object or numpy unicode array."""
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in np.asarray(values).tolist()]
