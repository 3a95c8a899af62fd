"""A root: a folder holding many feature sets, each named by its content key."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import ConfigError, FeatstoreError, StoreNotFoundError
from . import location
from .location import AnyPath, as_path

SUFFIXES = (".zarr", ".h5", ".h5.partial")


@dataclass
class Entry:
    """One feature set found in a root, read from its metadata without opening arrays."""

    key: str
    path: AnyPath
    format: str
    complete: bool
    metadata: dict[str, Any]

    @functools.cached_property
    def size_bytes(self) -> int:
        """Bytes on disk: listed only when asked (a recursive listing, slow on S3)."""
        return location.size_of(self.path)

    def summary(self) -> dict[str, Any]:
        m = self.metadata
        bb, ds = m.get("backbone") or {}, m.get("dataset") or {}
        return {
            "key": self.key, "path": str(self.path), "format": self.format,
            "complete": self.complete, "backbone": bb.get("id"),
            "dataset": ds.get("name"), "split": ds.get("split"),
            "n_samples": m.get("n_samples"), "n_views": m.get("n_views", 1),
            "n_features": m.get("n_features"), "dtype": m.get("dtype"),
            "size_bytes": self.size_bytes, "created_at": m.get("created_at"),
            "created_by": m.get("created_by"),
        }


def _split_name(name: str) -> tuple[str, str] | None:
    for suffix in SUFFIXES[::-1]:  # longest first
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return None


def _read_meta(path: AnyPath, suffix: str) -> dict[str, Any]:
    from . import schema

    if suffix == ".zarr":
        text = (path / "zarr.json").read_text()
        return (json.loads(text).get("attributes") or {}).get(schema.META_ATTR) or {}
    import h5py

    with path.open("rb") as raw_file, h5py.File(raw_file, "r") as f:
        raw = f.attrs.get(schema.META_ATTR)
        return json.loads(raw) if raw is not None else {}


class Root:
    """A folder of feature sets: ``ROOT/<key>.zarr`` or ``ROOT/<key>.h5``.

    ``path`` is a local or shared folder, or an fsspec URL (``s3://bucket/features``).
    """

    def __init__(self, path: str | Path | AnyPath):
        self.path = as_path(path)

    def path_for(self, key: str, format: str = "zarr") -> AnyPath:
        if format not in ("zarr", "hdf5"):
            raise ConfigError(f"The 'format' option must be 'zarr' or 'hdf5'. Got {format!r} instead.")
        return self.path / f"{key}{'.zarr' if format == 'zarr' else '.h5'}"

    def __iter__(self) -> Iterator[Entry]:
        return self._scan()

    def _scan(self, prefix: str | None = None) -> Iterator[Entry]:
        """Entries, reading the metadata only of keys that start with ``prefix``."""
        if not self.path.is_dir():
            return
        for child in sorted(self.path.iterdir()):
            parts = _split_name(child.name)
            if parts is None or (prefix and not parts[0].startswith(prefix)):
                continue
            key, suffix = parts
            try:
                meta = _read_meta(child, suffix) if suffix != ".h5.partial" else {}
            except (OSError, ValueError, KeyError):
                meta = {}
            if not meta and suffix != ".h5.partial":
                continue
            yield Entry(key=key, path=child, format="zarr" if suffix == ".zarr" else "hdf5",
                        complete=bool(meta.get("complete")) and suffix != ".h5.partial",
                        metadata=meta)

    def entries(self, *, backbone: str | None = None, dataset: str | None = None,
                prefix: str | None = None) -> list[Entry]:
        out = []
        for e in self._scan(prefix):
            if backbone and backbone not in ((e.metadata.get("backbone") or {}).get("id") or ""):
                continue
            if dataset and dataset not in ((e.metadata.get("dataset") or {}).get("name") or ""):
                continue
            out.append(e)
        return out

    def find(self, prefix: str) -> Entry:
        """The one feature set whose key starts with ``prefix``."""
        matches = list(self._scan(prefix))
        if not matches:
            raise StoreNotFoundError(
                f"No feature set with a key starting {prefix!r} in {self.path}. "
                f"See what it holds with `featstore ls {self.path}`."
            )
        keys = {e.key for e in matches}
        if len(keys) > 1:
            raise FeatstoreError(
                f"Key prefix {prefix!r} is ambiguous in {self.path}: it matches "
                f"{', '.join(sorted(keys)[:5])}. Give more characters."
            )
        # Prefer the complete one when a key exists in two formats.
        return sorted(matches, key=lambda e: not e.complete)[0]

    def remove(self, prefix: str) -> Entry:
        entry = self.find(prefix)
        location.remove(entry.path)
        return entry


def resolve_store_path(path: str | Path | AnyPath) -> AnyPath:
    """A store path as given, or ``ROOT/KEY_PREFIX`` resolved within its root."""
    path = as_path(path)
    if path.name.endswith(SUFFIXES) or path.exists():
        if not path.exists() and location.with_suffix_added(path, ".partial").exists():
            from ..errors import StoreIncompleteError

            raise StoreIncompleteError(
                f"{path} is incomplete: only {path.name}.partial exists, an interrupted "
                "extraction. Rerun the same `featstore extract` command to resume it."
            )
        return path
    if path.parent.is_dir():
        return Root(path.parent).find(path.name).path
    raise StoreNotFoundError(
        f"No feature set at {path}: expected a .zarr folder, an .h5 file, or ROOT/KEY_PREFIX."
    )
