"""A root: a folder holding many feature sets, each named by its content key.

Every set in a root has a *state*: ``complete``; ``incomplete`` (its extraction, copy
or unpack never finished); ``damaged`` (its metadata is missing, unreadable or not
featstore's: a writer was killed before writing it, or files were removed by hand);
``newer schema`` (written by a newer featstore, which this one cannot read).
"""

from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from featstore.errors import (AmbiguousKeyError, ConfigError, FeatstoreError, StoreCorruptError,
                              StoreNotFoundError)
from featstore.utils.keys import KEY_LENGTH
from featstore.store import location, schema
from featstore.store._base import FeatureStore
from featstore.store.backends import backend_for, backend_named, is_set_name, split_name
from featstore.store.lease import Lease, LeaseBusyError, hold_lease
from featstore.store.location import AnyPath, as_path

log = logging.getLogger(__name__)

COMPLETE, INCOMPLETE, DAMAGED, NEWER = "complete", "incomplete", "damaged", "newer schema"

#: A content key, as `featstore extract` names sets (keys.content_key).
KEY_PATTERN = re.compile(rf"[0-9a-f]{{{KEY_LENGTH}}}")


@dataclass
class Entry:
    """One feature set found in a root, read from its metadata without opening arrays."""

    key: str
    path: AnyPath
    format: str
    complete: bool
    metadata: dict[str, Any]
    state: str = ""     # complete | incomplete | damaged | newer schema
    problem: str = ""   # why a set is damaged or unreadable, for people

    def __post_init__(self) -> None:
        if not self.state:
            self.state = COMPLETE if self.complete else INCOMPLETE

    @property
    def backend(self) -> type[FeatureStore]:
        """The backend of the set's format: ask it for the set's files."""
        return backend_named(self.format)

    @functools.cached_property
    def size_bytes(self) -> int:
        """Bytes on disk: listed only when asked (a recursive listing, slow on S3)."""
        return location.size_of(self.path)

    def summary(self) -> dict[str, Any]:
        m = self.metadata
        return {
            "key": self.key, "path": str(self.path), "format": self.format,
            "complete": self.complete, "state": self.state, "problem": self.problem or None,
            "backbone": _field(m, "backbone", "id"), "dataset": _field(m, "dataset", "name"),
            "split": _field(m, "dataset", "split"),
            "n_samples": m.get("n_samples"), "n_views": m.get("n_views", 1),
            "n_features": m.get("n_features"), "dtype": m.get("dtype"),
            "size_bytes": self.size_bytes, "created_at": m.get("created_at"),
            "created_by": m.get("created_by"),
        }


def _field(meta: dict[str, Any], section: str, name: str) -> Any:
    """``meta[section][name]``, or None where either is missing or not an object."""
    part = meta.get(section)
    return part.get(name) if isinstance(part, dict) else None


def _classify(meta: Any, name: str) -> tuple[str, str]:
    """(state, problem) of a set whose featstore attribute is ``meta``."""
    if not isinstance(meta, dict):
        return DAMAGED, f"its featstore metadata is a JSON {type(meta).__name__}, not an object"
    version = meta.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) \
            and version > schema.SCHEMA_VERSION:
        return NEWER, (f"written by a newer featstore (store schema {version}; this one reads "
                       f"{schema.SCHEMA_VERSION} and older): upgrade featstore "
                       "(pip install -U featstore) to read it")
    try:
        schema.check_metadata(meta, name)
    except FeatstoreError as err:
        return DAMAGED, str(err)
    return (COMPLETE if meta.get("complete") is True else INCOMPLETE), ""


def inspect(path: Any) -> Entry | None:
    """The feature set at ``path`` as a root lists it, or None if it is not one.

    A set is named as a backend names its sets (``KEY.zarr``, ``KEY.h5``, or the working
    name of one being written, ``KEY.h5.partial``) and carries featstore metadata; one
    whose metadata is missing or unreadable counts (as ``damaged``) only when its name
    is a content key, so a stranger's ``notes.zarr`` is never ours.
    """
    path = as_path(path)
    parts = split_name(path.name)
    if parts is None:
        return None
    backend, key, final = parts
    fmt = backend.format
    if not final:  # being written (maybe right now), or interrupted: not read
        return Entry(key, path, fmt, False, {})
    try:
        meta, problem = backend.read_metadata(path), ""
    except FileNotFoundError:
        if not location.exists(path):
            return None
        meta, problem = None, (f"it has no {backend.metadata_file} (its writer was killed "
                               "before writing it, or files were removed)")
    except (OSError, ValueError, KeyError, TypeError) as err:
        meta, problem = None, f"its metadata cannot be read ({type(err).__name__}: {err})"
    if meta is None:
        if not KEY_PATTERN.fullmatch(key):
            return None
        return Entry(key, path, fmt, False, {}, DAMAGED,
                     problem or "it has no featstore metadata (its writer was killed first)")
    state, problem = _classify(meta, path.name)
    return Entry(key, path, fmt, state == COMPLETE, meta if isinstance(meta, dict) else {},
                 state, problem)


def is_damaged(path: Any) -> bool:
    """Whether ``path`` is a set without usable metadata (False if there is none)."""
    entry = inspect(path)
    return entry is not None and entry.state == DAMAGED


def looks_like_set(path: Any) -> bool:
    """Whether ``path`` holds only what featstore writes into a set (used before removing
    a damaged one), as its backend judges."""
    return backend_for(path).looks_like_set(path)


def clear_damaged(path: Any) -> str | None:
    """Remove the set at ``path`` if it is damaged (no usable metadata); what was wrong.

    Call it only while holding the key's lease: a writer killed before writing the
    metadata must not block the key forever, and the next writer starts it again.
    Raises StoreCorruptError if the folder holds files featstore never writes.
    """
    entry = inspect(path)
    if entry is None or entry.state != DAMAGED:
        return None
    if not looks_like_set(path):
        raise StoreCorruptError(
            f"{path} is in the way: it is named like this feature set but holds files "
            "featstore never writes. Move it elsewhere, then rerun the same command.")
    log.warning("%s is damaged (%s); removing it and extracting this set again.", path,
                entry.problem)
    location.remove(entry.path)
    return entry.problem


class Root:
    """A folder of feature sets: ``ROOT/<key>.zarr`` or ``ROOT/<key>.h5``.

    ``path`` is a local or shared folder, or an fsspec URL (``s3://bucket/features``).
    """

    def __init__(self, path: str | Path | AnyPath):
        self.path = as_path(path)

    def path_for(self, key: str, format: str = "zarr") -> AnyPath:
        """Where the finished set of ``key`` in ``format`` is (or would be)."""
        return self.path / backend_named(format).name_for(key)

    def __iter__(self) -> Iterator[Entry]:
        return self._scan()

    def _scan(self, prefix: str | None = None, *, damaged: bool = False) -> Iterator[Entry]:
        """Entries, reading the metadata only of keys that start with ``prefix``; damaged
        sets only if ``damaged`` (readers skip them, `ls` and `rm` show them)."""
        if not self.path.is_dir():
            return
        for child in sorted(self.path.iterdir()):
            parts = split_name(child.name)
            if parts is None or (prefix and not parts[1].startswith(prefix)):
                continue
            entry = inspect(child)
            if entry is not None and (damaged or entry.state != DAMAGED):
                yield entry

    def entries(self, *, backbone: str | None = None, dataset: str | None = None,
                prefix: str | None = None, damaged: bool = False) -> list[Entry]:
        out = []
        for e in self._scan(prefix, damaged=damaged):
            if backbone and backbone not in (_field(e.metadata, "backbone", "id") or ""):
                continue
            if dataset and dataset not in (_field(e.metadata, "dataset", "name") or ""):
                continue
            out.append(e)
        return out

    def find(self, prefix: str) -> Entry:
        """The one feature set whose key starts with ``prefix`` (damaged ones included)."""
        matches = list(self._scan(prefix, damaged=True))
        if not matches:
            raise StoreNotFoundError(
                f"No feature set with a key starting {prefix!r} in {self.path}. "
                f"See what it holds with `featstore ls {self.path}`."
            )
        keys = {e.key for e in matches}
        if len(keys) > 1:
            raise AmbiguousKeyError(
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
    if is_set_name(path.name) or path.exists():
        working = backend_for(path).working_path(path)
        if not path.exists() and working != path and working.exists():
            from featstore.errors import StoreIncompleteError

            raise StoreIncompleteError(
                f"{path} is incomplete: only {working.name} exists, an interrupted "
                "extraction. Rerun the same `featstore extract` command to resume it."
            )
        return path
    if path.parent.is_dir():
        return Root(path.parent).find(path.name).path
    raise StoreNotFoundError(
        f"No feature set at {path}: expected a .zarr folder, an .h5 file, or ROOT/KEY_PREFIX."
    )


# -- removing sets: `featstore rm` ------------------------------------------------------
def _refuse_special(path: AnyPath) -> None:
    """Refuse what `rm` must never remove whatever it holds: links, `/`, the home folder."""
    if location.is_remote(path):
        return
    if path.is_symlink():
        raise ConfigError(
            f"{path} is a symbolic link: featstore rm never follows links. Remove the link "
            "with your shell's rm, or name the feature set it points to.")
    resolved = path.resolve()
    if resolved == Path(resolved.anchor):
        raise ConfigError(f"{path} is the file system root, not a feature set: featstore rm "
                          "removes only feature sets (ROOT/KEY_PREFIX).")
    if resolved == Path.home().resolve():
        raise ConfigError(f"{path} is your home folder, not a feature set: featstore rm "
                          "removes only feature sets (ROOT/KEY_PREFIX).")


def _not_a_set(path: AnyPath) -> FeatstoreError:
    """Why an existing ``path`` that is no feature set is refused."""
    if path.is_dir():
        held = Root(path).entries(damaged=True)
        if held or (path / ".leases").exists():
            return ConfigError(
                f"{path} is a root holding {len(held)} feature set(s), not a feature set. "
                f"Remove one with `featstore rm {path}/KEY_PREFIX`, or its incomplete ones "
                f"with `featstore rm {path} --incomplete`.")
        return ConfigError(
            f"{path} is a folder that is not a feature set (a KEY.zarr folder or KEY.h5 file "
            "written by `featstore extract`); featstore rm removes only feature sets.")
    return ConfigError(
        f"{path} is a file that is not a feature set (a KEY.zarr folder or KEY.h5 file "
        "written by `featstore extract`); featstore rm removes only feature sets.")


def check_removable(entry: Entry) -> Entry:
    """``entry`` if `rm` may remove it: its metadata names its key, or, damaged, it is
    named by a content key and holds only what featstore writes."""
    if entry.state == DAMAGED:
        if not KEY_PATTERN.fullmatch(entry.key) or not looks_like_set(entry.path):
            raise ConfigError(
                f"{entry.path} is named like a feature set but holds files featstore never "
                "writes, so featstore rm leaves it alone. Remove it by hand if you are sure.")
        return entry
    meta_key = entry.metadata.get("key")
    if meta_key is not None and meta_key != entry.key:
        raise ConfigError(
            f"{entry.path} holds the feature set of key {meta_key}, not {entry.key}: it was "
            "renamed by hand. Rename it back to its key, then remove it.")
    return entry


def set_to_remove(target: Any) -> Entry:
    """The feature set ``target`` names (a store path or ROOT/KEY_PREFIX), checked for `rm`."""
    path = as_path(target)
    _refuse_special(path)
    if path.exists():
        entry = inspect(path)
        if entry is None:
            raise _not_a_set(path)
        return check_removable(entry)
    if is_set_name(path.name):
        working = backend_for(path).working_path(path)
        if working != path and working.exists():
            return set_to_remove(working)  # an interrupted extraction (HDF5)
        raise StoreNotFoundError(f"No feature set at {path}. See `featstore ls {path.parent}`.")
    if not path.parent.is_dir():
        raise StoreNotFoundError(
            f"No feature set at {path}: {path.parent} is not a folder. Give a store path or "
            "ROOT/KEY_PREFIX (see `featstore ls ROOT`).")
    entry = Root(path.parent).find(path.name)
    _refuse_special(entry.path)
    return check_removable(entry)


def unfinished_sets(root: Any) -> list[Entry]:
    """The incomplete and damaged sets of ``root`` (`rm --incomplete`); never one of a
    newer schema (it may be complete for the featstore that wrote it)."""
    path = as_path(root)
    _refuse_special(path)
    if not path.is_dir():
        raise StoreNotFoundError(f"Root {root} does not exist (or is not a folder).")
    if inspect(path) is not None:
        raise ConfigError(f"{root} is a feature set, not a root: `featstore rm {root}` removes "
                          "it; --incomplete takes a root.")
    out = []
    for e in Root(path).entries(damaged=True):
        if e.state in (INCOMPLETE, DAMAGED) and not e.path.is_symlink():
            try:
                out.append(check_removable(e))
            except ConfigError as err:
                log.warning("%s", err)
    return out


def live_writer(entry: Entry) -> str | None:
    """Who is writing ``entry`` now (its key's lease is live), or None."""
    lease = Lease(entry.path.parent, entry.key)  # only read: whose it is
    holder = lease.holder()
    if holder is None or lease.expired(holder):
        return None
    return holder.describe()


def remove_set(entry: Entry) -> None:
    """Remove one set while holding its key's lease, so no writer races the removal.

    Raises FeatstoreError (naming the writer) if another process holds a live lease."""
    try:
        with hold_lease(entry.path.parent, entry.key, wait=False):
            location.remove(entry.path)
    except LeaseBusyError as err:
        raise FeatstoreError(busy_message(entry, err.holder.describe() if err.holder
                                          else "another process")) from None


def busy_message(entry: Entry, who: str) -> str:
    return (f"{entry.path} is being written by {who} (its lease is live); nothing was "
            "removed. Wait for that writer to finish (if it died, its lease expires 60 s "
            "after its last renewal by default, and the next `featstore extract` of this "
            "key resumes the set).")
