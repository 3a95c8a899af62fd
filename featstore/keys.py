"""Content keys: one hash of everything that determines a feature set's values."""

from __future__ import annotations

import getpass
import hashlib
import json
import platform
import socket
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from typing import Any

#: Length of a key in hex characters (96 bits: collisions are not a practical concern).
KEY_LENGTH = 24


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace, so equal inputs give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


def content_key(inputs: dict[str, Any]) -> str:
    """The key of a feature set: sha256 of the canonical JSON of its inputs, truncated.

    ``inputs`` holds the backbone's provenance as :func:`backbone_key_inputs` keeps it
    (weights sha256, architecture, layer, pooling, preprocessing), the dtype, views and
    augmentation, the data set fingerprint and split. Library versions, device, batch size and time are deliberately left out:
    they are recorded, but the same inputs mean the same features.
    """
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:KEY_LENGTH]


#: Provenance fields a content key never holds: a display name, D (it follows from the
#: rest) and library versions (recorded in metadata, like every version).
UNKEYED_FIELDS = ("id", "num_features", "library")
#: Provenance fields that say where the files sit, not what they compute. They are left
#: out of the key whenever ``weights_sha256`` identifies the weights; without such a hash
#: the location is all that tells two weights apart, so it stays (a cache miss is better
#: than a wrong hit).
LOCATION_FIELDS = ("weights_source", "weights_path", "path", "source", "folder")


def backbone_key_inputs(provenance: dict[str, Any]) -> dict[str, Any]:
    """The part of a backbone's provenance that goes into content keys.

    It names the computation (architecture, weights hash, layer, pooling,
    preprocessing, dtype), never where the files sit: the same weights installed at two
    paths give one key, so teammates share one cache.
    """
    out = {k: v for k, v in provenance.items() if k not in UNKEYED_FIELDS}
    if out.get("weights_sha256"):
        for name in LOCATION_FIELDS:
            out.pop(name, None)
    if isinstance(out.get("model_card"), dict):
        from .pretrain.card import card_key_fields

        out["model_card"] = card_key_fields(out["model_card"])
    return out


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in ("featstore", "torch", "timm", "transformers", "numpy", "zarr", "h5py"):
        try:
            out[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def created_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def backbone_key(metadata: dict[str, Any]) -> str | None:
    """A key of everything about the backbone that shapes the features (architecture,
    weights, layer, pooling, preprocessing): equal for stores a head can be applied to."""
    inputs = (metadata.get("key_inputs") or {}).get("backbone")
    return content_key(inputs) if inputs else None


def file_sha256(path: Any) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
