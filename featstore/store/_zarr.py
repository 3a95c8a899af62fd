"""Zarr v3 backend: a group per feature set, chunk files written whole and atomically.

A set is the folder ``KEY.zarr``, written in place: its group metadata (``zarr.json``,
the attribute ``featstore``) says whether it is complete, and is written last.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from featstore.errors import FeatstoreError, StoreCorruptError, StoreNotFoundError
from featstore.store import schema
from featstore.store._base import FeatureStore, Mode, translate_os_error
from featstore.store.integrity import whole_repair_hint
from featstore.store import location
from featstore.store.location import as_path, is_remote
from featstore.store.codecs import zarr_compressors

#: The group metadata: holds the featstore attribute, and so ``complete``.
GROUP_META = "zarr.json"
log = logging.getLogger(__name__)

#: Temporary files of writes a kill interrupted: zarr's own (``NAME.<32 hex>.partial``:
#: zarr >= 3.1.3 writes a chunk or zarr.json there, then renames it) and
#: location.put_atomic's (``.NAME.XXXXXXXX.tmp``, written by copy).
STRAY = re.compile(r"^(?:.+\.[0-9a-f]{32}\.partial|\..+\.[0-9a-f]{8}\.tmp)$")

#: What a featstore Zarr folder holds at its top level: the group metadata and the arrays.
MEMBERS = frozenset({GROUP_META, schema.FEATURES, schema.LABELS, schema.SAMPLE_IDS,
                     schema.VALID, schema.CHUNK_SHA256})


def _written_by_featstore(rel: str) -> bool:
    """Whether ``rel`` (a file's name relative to a set folder) is one featstore writes:
    zarr.json, an array's zarr.json or chunk file (``ARRAY/c/0/1``), or a temporary file
    of an interrupted write. Before removing a set without metadata, every file must be
    one of these: user files in a folder named like a key are never removed."""
    parts = rel.split("/")
    arrays = MEMBERS - {GROUP_META}
    if STRAY.match(parts[-1]):  # beside zarr.json, or inside an array's folder
        return len(parts) == 1 or (parts[0] in arrays and (len(parts) == 2 or (
            parts[1] == "c" and all(x.isdigit() for x in parts[2:-1]))))
    if parts == [GROUP_META]:
        return True
    if len(parts) < 2 or parts[0] not in arrays:
        return False
    return parts[1:] == [GROUP_META] or (
        len(parts) >= 3 and parts[1] == "c" and all(x.isdigit() for x in parts[2:]))


def zarr_location(path: Any, *, read_only: bool) -> Any:
    """What zarr opens: a local folder name, or an fsspec store for a URL (lazy reads:
    only the chunks indexed are fetched)."""
    path = as_path(path)
    if not is_remote(path):
        return str(path)
    from zarr.storage import FsspecStore

    return FsspecStore.from_url(str(path), storage_options=dict(path.storage_options),
                                read_only=read_only)


class ZarrStore(FeatureStore):
    format = "zarr"
    suffix = ".zarr"
    suffixes = (".zarr",)
    completion_files = (GROUP_META,)
    layout_files = (f"{schema.FEATURES}/zarr.json", f"{schema.VALID}/zarr.json")
    metadata_file = GROUP_META
    row_chunk_files = True

    # -- the format on disk (see featstore.store.formats) ------------------------------
    @classmethod
    def key_of(cls, name: str) -> tuple[str, bool] | None:
        return (name[: -len(cls.suffix)], True) if name.endswith(cls.suffix) else None

    @classmethod
    def is_member(cls, name: str) -> bool:
        # A killed atomic write leaves a temporary file beside its target (STRAY).
        return name in MEMBERS or bool(STRAY.match(name))

    @classmethod
    def looks_like_set(cls, path: Any) -> bool:
        fs, p = location.fs_and_path(path)
        if not fs.isdir(p):
            return False
        base = p.rstrip("/") + "/"
        return all(_written_by_featstore(name[len(base):]) for name in fs.find(p))

    @classmethod
    def read_metadata(cls, path: Any) -> Any:
        group = json.loads(location.join(path, GROUP_META).read_text())
        attrs = group.get("attributes") if isinstance(group, dict) else None
        if not isinstance(group, dict) or not isinstance(attrs, (dict, type(None))):
            raise ValueError("zarr.json is not a Zarr group's metadata (not a JSON object)")
        return (attrs or {}).get(schema.META_ATTR)

    @classmethod
    def checksummed(cls, name: str) -> bool:
        return name.startswith((f"{schema.FEATURES}/c/", f"{schema.VALID}/c/"))

    @classmethod
    def marked_incomplete(cls, name: str, data: bytes) -> bytes:
        if name != GROUP_META:
            return data
        meta = json.loads(data)
        meta.setdefault("attributes", {}).setdefault(schema.META_ATTR, {})["complete"] = False
        return json.dumps(meta, indent=2).encode()

    # -- a set -------------------------------------------------------------------------

    def __init__(self, path: Path, mode: Mode, group: zarr.Group):
        super().__init__(path, mode)
        self._group = group
        self._arrays: dict[str, Any] = {}
        try:
            attrs = dict(group.attrs)
        except (TypeError, ValueError) as err:
            raise StoreCorruptError(f"{path}: the group's attributes in zarr.json are not a "
                                    f"JSON object ({err}).") from err
        self.metadata = schema.check_metadata(attrs.get(schema.META_ATTR), str(path))

    @classmethod
    def open(cls, path: Path, mode: Mode = "r") -> "ZarrStore":
        if not (as_path(path) / GROUP_META).exists():
            raise StoreNotFoundError(
                f"No Zarr feature set at {path}. List what a root holds with `featstore ls ROOT`."
            )
        try:
            group = zarr.open_group(zarr_location(path, read_only=mode == "r"),
                                    mode="r" if mode == "r" else "r+")
        except (FeatstoreError, MemoryError):
            raise
        except Exception as err:
            from featstore.store.location import explain_storage_error

            if explain_storage_error(err) is not None:
                raise  # credentials, permissions, buckets: the CLI explains those
            raise StoreCorruptError(f"{path} cannot be opened as a Zarr group "
                                    f"({type(err).__name__}: {str(err)[:200]}).") from err
        return cls(path, mode, group)

    @classmethod
    def create(cls, path: Path, *, metadata: dict[str, Any], n_features: int, n_views: int,
               dtype: str, chunk_rows: int, sample_ids: list[str], labels: np.ndarray | None,
               codec: str) -> "ZarrStore":
        n = len(sample_ids)
        try:
            group = zarr.open_group(zarr_location(path, read_only=False), mode="w")
            shape, chunks, dims = schema.features_layout(n, n_features, n_views, chunk_rows)
            # Sized up front; chunks are filled in whole by write_chunk, never appended.
            group.create_array(schema.FEATURES, shape=shape, chunks=chunks, dtype=dtype,
                               compressors=zarr_compressors(codec, dtype), fill_value=0,
                               dimension_names=dims)
            group.create_array(schema.VALID, shape=(n,), chunks=(chunk_rows,), dtype="bool",
                               fill_value=False, dimension_names=("sample",))
            ids = group.create_array(schema.SAMPLE_IDS, shape=(n,), chunks=(max(n, 1),),
                                     dtype=str, dimension_names=("sample",))
            ids[:] = np.asarray(sample_ids, dtype=object)
            if labels is not None:
                lab = group.create_array(schema.LABELS, shape=(n,), chunks=(max(n, 1),),
                                         dtype=labels.dtype, dimension_names=("sample",))
                lab[:] = labels
            group.create_array(schema.CHUNK_SHA256, shape=(schema.n_chunks(n, chunk_rows),),
                               chunks=(1,), dtype=str, dimension_names=("chunk",))
            group.attrs[schema.META_ATTR] = metadata  # complete=False until the very end
        except OSError as err:
            raise translate_os_error(err, path) from err
        return cls(path, "r+", group)

    def _array(self, name: str) -> Any:
        if name not in self._arrays:
            try:
                self._arrays[name] = self._group[name]
            except KeyError:
                self._arrays[name] = None
            except (FeatstoreError, MemoryError):
                raise
            except Exception as err:  # a damaged or foreign zarr.json of the array
                raise StoreCorruptError(
                    f"{self.path}: the metadata of array {name!r} ({name}/zarr.json) cannot "
                    f"be read ({type(err).__name__}: {str(err)[:200]}). "
                    f"{whole_repair_hint(self.path)}") from err
        return self._arrays[name]

    def _array_file(self, name: str) -> str:
        return f"{name}/{GROUP_META}"

    def _listing(self, name: str) -> set[str]:
        """Keys of the chunk files of array ``name`` (through zarr's store listing, which
        works alike for local folders and fsspec stores)."""
        from zarr.core.sync import sync

        store = self._group.store
        prefix = f"{self._group.path}/{name}/c/" if self._group.path else f"{name}/c/"

        async def collect() -> set[str]:
            return {k async for k in store.list_prefix(prefix)}

        try:
            return sync(collect())
        except FileNotFoundError:
            return set()
        except OSError as err:
            raise translate_os_error(err, self.path) from err

    def _absent_chunk_files(self) -> dict[int, list[str]]:
        committed = sorted(self._committed_chunks())
        if not committed:
            return {}
        out: dict[int, list[str]] = {}
        for name in (schema.FEATURES, schema.VALID):
            arr = self._array(name)
            if arr is None:
                continue
            have = self._listing(name)
            # Row chunk i is chunk (i, 0[, 0]) of the array: features span every column.
            rest = [range(-(-s // c)) for s, c in zip(arr.shape[1:], arr.chunks[1:])]
            for i in committed:
                for coords in itertools.product([i], *rest):
                    key = f"{name}/{arr.metadata.encode_chunk_key(coords)}"
                    if key not in have:
                        out.setdefault(i, []).append(key)
        return out

    def discard_stray_files(self) -> list[str]:
        """Remove the temporary files of writes that a kill interrupted (zarr writes each
        chunk and zarr.json to a temporary name, then renames it). Call while holding
        the key's lease, before resuming: the finished set then holds exactly the files
        of a clean run (found by tests/test_crash.py under load)."""
        fs, p = location.fs_and_path(self.path)
        base = p.rstrip("/") + "/"
        stray = sorted(n for n in fs.find(p) if STRAY.match(n.rsplit("/", 1)[-1]))
        for name in stray:
            log.info("removing %s, left by an interrupted write", name)
            fs.rm_file(name)
        return [n[len(base):] for n in stray]

    def _write_meta(self) -> None:
        self._group.attrs[schema.META_ATTR] = self.metadata

    def _write_rows(self, index: int, features: np.ndarray, valid: np.ndarray) -> None:
        start, stop = schema.chunk_bounds(index, self.n_samples, self.chunk_rows)
        self.features[start:stop] = features
        self._array(schema.VALID)[start:stop] = valid

    def _write_digest(self, index: int, digest: str) -> None:
        self._array(schema.CHUNK_SHA256)[index] = digest

    def _committed_chunks(self) -> set[int]:
        digests = self._array(schema.CHUNK_SHA256)
        if digests is None:
            return set()
        return {i for i, d in enumerate(schema.as_str_list(digests[...])) if d}

    def close(self) -> None:
        self._arrays.clear()
        self._records.clear()
