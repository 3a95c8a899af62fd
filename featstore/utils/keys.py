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

    ``inputs`` holds the backbone's provenance as
    :func:`featstore.backbones.backbone_key_inputs` keeps it
    (weights sha256, architecture, layer, pooling, preprocessing), the dtype, views and
    augmentation, the data set fingerprint and split. Library versions, device, batch size and time are deliberately left out:
    they are recorded, but the same inputs mean the same features.
    """
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()[:KEY_LENGTH]


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
    """``user@host``: who made a feature set, holds a lease or wrote a record."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError, ImportError):  # no user name (containers without one)
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
