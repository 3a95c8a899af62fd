"""HDF5 backend: the same schema as Zarr, in one ``.h5`` file.

HDF5 cannot take two writers and a killed writer can leave a file unreadable
(docs/storage.md), so an extraction writes ``NAME.h5.partial``, flushes after every
chunk, and renames it to ``NAME.h5`` only once it is complete. A partial file that no
longer opens is discarded and extraction starts over.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from featstore.errors import ConfigError, FeatstoreError, StoreCorruptError, StoreNotFoundError
from featstore.store import schema
from featstore.store._base import FeatureStore, Mode, translate_os_error
from featstore.store.integrity import whole_repair_hint
from featstore.store.codecs import hdf5_options
from featstore.store import location
from featstore.store.location import AnyPath, as_path, is_remote

#: Added to a set's name while it is written: ``KEY.h5.partial``.
PARTIAL = ".partial"
#: The first bytes of every HDF5 file.
SIGNATURE = b"\x89HDF\r\n\x1a\n"

_REMOTE_WRITE = (
    "{path}: HDF5 stores are written on a local or shared file system only (HDF5 needs a "
    "file it can seek and rewrite). Use --format zarr for a remote root, or extract to a "
    "local root and `featstore copy` the finished set there."
)


class HDF5Store(FeatureStore):
    format = "hdf5"
    suffix = ".h5"
    suffixes = (".h5", ".hdf5")
    single_file = True
    metadata_file = "featstore attribute"

    # -- the format on disk (see featstore.store.formats) ------------------------------
    @classmethod
    def key_of(cls, name: str) -> tuple[str, bool] | None:
        final = name[: -len(PARTIAL)] if name.endswith(PARTIAL) else name
        if not final.endswith(cls.suffix):
            return None
        return final[: -len(cls.suffix)], final == name

    @classmethod
    def working_path(cls, path: Any) -> AnyPath:
        path = as_path(path)
        return path if path.name.endswith(PARTIAL) else location.with_suffix_added(path, PARTIAL)

    @classmethod
    def final_path(cls, path: Any) -> AnyPath:
        path = as_path(path)
        return path.with_name(path.name[: -len(PARTIAL)]) if path.name.endswith(PARTIAL) \
            else path

    @classmethod
    def is_member(cls, name: str) -> bool:
        return name == ""  # the file itself: an HDF5 set holds nothing else

    @classmethod
    def looks_like_set(cls, path: Any) -> bool:
        fs, p = location.fs_and_path(path)
        if not fs.isfile(p):
            return False
        with fs.open(p, "rb") as f:
            head = f.read(len(SIGNATURE))
        return head in (b"", SIGNATURE)

    @classmethod
    def read_metadata(cls, path: Any) -> Any:
        with as_path(path).open("rb") as raw_file, h5py.File(raw_file, "r") as f:
            raw = f.attrs.get(schema.META_ATTR)
            return json.loads(raw) if raw is not None else None

    # -- a set -------------------------------------------------------------------------

    def __init__(self, path: Path, mode: Mode, file: h5py.File):
        super().__init__(path, mode)
        self._file = file
        raw = file.attrs.get(schema.META_ATTR)
        try:
            meta = json.loads(raw) if raw is not None else None
        except (TypeError, ValueError) as err:
            raise StoreCorruptError(f"{path}: metadata is not valid JSON ({err}).") from err
        self.metadata = schema.check_metadata(meta, str(path))

    @classmethod
    def open(cls, path: Path, mode: Mode = "r") -> "HDF5Store":
        path = as_path(path)
        if not path.exists():
            raise StoreNotFoundError(
                f"No HDF5 feature set at {path}. List what a root holds with `featstore ls ROOT`."
            )
        if is_remote(path) and mode != "r":
            raise ConfigError(_REMOTE_WRITE.format(path=path))
        try:
            # A remote file is read through a file object: only the blocks read are fetched.
            f = h5py.File(path.open("rb") if is_remote(path) else path,
                          "r" if mode == "r" else "r+")
        except OSError as err:
            raise StoreCorruptError(
                f"{path} cannot be opened as HDF5 ({err}). If an extraction was killed while "
                "writing it, delete it and extract again."
            ) from err
        return cls(path, mode, f)

    @classmethod
    def create(cls, path: Path, *, metadata: dict[str, Any], n_features: int, n_views: int,
               dtype: str, chunk_rows: int, sample_ids: list[str], labels: np.ndarray | None,
               codec: str) -> "HDF5Store":
        n = len(sample_ids)
        if is_remote(as_path(path)):
            raise ConfigError(_REMOTE_WRITE.format(path=path))
        try:
            f = h5py.File(path, "w")
            shape, chunks, dims = schema.features_layout(n, n_features, n_views, chunk_rows)
            feats = f.create_dataset(schema.FEATURES, shape=shape, chunks=chunks, dtype=dtype,
                                     fillvalue=0, **hdf5_options(codec))
            valid = f.create_dataset(schema.VALID, shape=(n,), dtype=bool, fillvalue=False,
                                     chunks=(chunks[0],))
            ids = f.create_dataset(schema.SAMPLE_IDS, data=np.asarray(sample_ids, dtype=object),
                                   dtype=h5py.string_dtype())
            made = [(feats, dims), (valid, ("sample",)), (ids, ("sample",))]
            if labels is not None:
                made.append((f.create_dataset(schema.LABELS, data=labels), ("sample",)))
            digests = f.create_dataset(schema.CHUNK_SHA256, shape=(schema.n_chunks(n, chunk_rows),),
                                       dtype=h5py.string_dtype())
            made.append((digests, ("chunk",)))
            for dset, names in made:
                for axis, name in enumerate(names):
                    dset.dims[axis].label = name
            f.attrs[schema.META_ATTR] = json.dumps(metadata)
            f.flush()
        except OSError as err:
            raise translate_os_error(err, path) from err
        return cls(path, "r+", f)

    def _array(self, name: str) -> Any:
        try:
            link = self._file.get(name, getlink=True)
            if link is None:
                return None
            dataset = self._file.get(name) if isinstance(link, h5py.HardLink) else None
            if dataset is None or not isinstance(dataset, h5py.Dataset) or dataset.external \
                    or dataset.is_virtual:
                # Links, external raw data and virtual datasets read other files: a set
                # from a pack or a shared root must hold its own bytes.
                raise StoreCorruptError(
                    f"{self.path}: the dataset {name!r} is a link, external data or a virtual "
                    "dataset (it reads other files); featstore sets hold their own bytes. "
                    f"Do not use this file. {whole_repair_hint(self.path)}")
            return dataset
        except (FeatstoreError, MemoryError):
            raise
        except Exception as err:  # a damaged object header
            raise StoreCorruptError(
                f"{self.path}: the dataset {name!r} cannot be opened ({type(err).__name__}: "
                f"{str(err)[:200]}). {whole_repair_hint(self.path)}") from err

    def _array_file(self, name: str) -> str:
        return f"dataset /{name}"

    def _write_meta(self) -> None:
        self._file.attrs[schema.META_ATTR] = json.dumps(self.metadata)
        self._file.flush()

    def _write_rows(self, index: int, features: np.ndarray, valid: np.ndarray) -> None:
        start, stop = schema.chunk_bounds(index, self.n_samples, self.chunk_rows)
        self._file[schema.FEATURES][start:stop] = features
        self._file[schema.VALID][start:stop] = valid

    def _write_digest(self, index: int, digest: str) -> None:
        self._file[schema.CHUNK_SHA256][index] = digest
        self._file.flush()  # a killed writer keeps everything up to here readable

    def _committed_chunks(self) -> set[int]:
        digests = self._array(schema.CHUNK_SHA256)
        if digests is None:
            return set()
        return {i for i, d in enumerate(digests[...]) if d}

    def _begin_repair(self) -> None:
        # A complete file is renamed back to NAME.h5.partial: the resumed extraction
        # finds it there, recomputes the damaged chunks and renames it back.
        partial = self.working_path(self.path)
        if partial != self.path:
            self._file.close()
            os.replace(self.path, partial)
            self.path = partial
            self._file = h5py.File(partial, "r+")

    def _finalize(self) -> None:
        # The complete file appears under its final name in one atomic rename.
        final = self.final_path(self.path)
        if final != self.path:
            self._file.flush()
            self._file.close()
            os.replace(self.path, final)
            self.path = final
            self._file = h5py.File(final, "r")
            self.mode = "r"

    def close(self) -> None:
        self._records.clear()
        try:
            self._file.close()
        except Exception:  # already closed
            pass
