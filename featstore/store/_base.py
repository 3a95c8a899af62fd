"""The backend-independent part of a feature store: reading, checks, verification."""

from __future__ import annotations

import abc
import logging
from pathlib import Path
from typing import Any, Iterator, Literal

import errno

import numpy as np

from featstore.errors import (DiskFullError, FeatstoreError, ReadOnlyStoreError, StoreCorruptError,
                      StoreIncompleteError)
from featstore.store import schema
from featstore.store.integrity import (VERIFY_GROUP, CheckedArray, StoreDamagedError, VerifyReport,
                        chunk_repair_hint, default_verify_reads, digest_of, read_error,
                        layout_problems, verify_store, whole_repair_hint)
from featstore.store.formats import StoreFormat
from featstore.store.location import as_path

log = logging.getLogger(__name__)

Mode = Literal["r", "r+", "a", "w", "w-"]


def translate_os_error(err: OSError, path: Path) -> Exception:
    """A full disk or a read-only location, explained; other OS errors unchanged."""
    if isinstance(err, (DiskFullError, ReadOnlyStoreError)):
        return err
    if err.errno == errno.ENOSPC:
        return DiskFullError(
            f"The disk holding {path} is full. Free space (or pick another --root) and rerun "
            "the same command: committed chunks are kept and extraction resumes."
        )
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ReadOnlyStoreError(
            f"Cannot write to {path}: {err.strerror}. Choose a --root you can write to."
        )
    return err


#: What a whole-array digest mismatch usually means, per array.
_WHY_DIFFERENT = {schema.VALID: "a deleted or altered chunk",
                  schema.LABELS: "relabelled rows or damaged bytes",
                  schema.SAMPLE_IDS: "renamed or damaged ids"}

__all__ = ["FeatureStore", "VerifyReport", "StoreDamagedError", "translate_os_error"]


class FeatureStore(StoreFormat):
    """One feature set: features, labels, sample ids, validity and metadata.

    Obtain one with :func:`featstore.open_store`; use it as a context manager.
    ``features`` is the lazy on-disk array (zarr or h5py, wrapped so that whole-chunk
    reads are checked against their sha256); :meth:`load_features` reads it into
    memory, :meth:`iter_chunks` streams it chunk by chunk. ``labels``, ``sample_ids``
    and ``valid`` are checked against their digests on every read (see
    :mod:`featstore.store.integrity`; ``verify_reads = False`` turns the hashing off).
    Its class methods (:class:`featstore.store.formats.StoreFormat`) describe its files.
    """

    def __init__(self, path: Path, mode: Mode):
        self.path = as_path(path)
        self.mode = mode
        self.metadata: dict[str, Any] = {}
        self.verify_reads = default_verify_reads()
        self._records: dict[str, Any] = {}  # recorded digests and valid mask, read once

    # -- backend hooks -----------------------------------------------------------------
    @abc.abstractmethod
    def _array(self, name: str) -> Any:
        """The named on-disk array (lazy), or None if absent."""

    @abc.abstractmethod
    def _write_meta(self) -> None:
        """Persist ``self.metadata``."""

    @abc.abstractmethod
    def _write_rows(self, index: int, features: np.ndarray, valid: np.ndarray) -> None:
        """Write chunk ``index`` of features and valid (whole chunk, aligned)."""

    @abc.abstractmethod
    def _committed_chunks(self) -> set[int]:
        """Indices of chunks whose checksum record exists."""

    @abc.abstractmethod
    def _write_digest(self, index: int, digest: str) -> None:
        """Record chunk ``index``'s checksum (its commit record)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    @abc.abstractmethod
    def _array_file(self, name: str) -> str:
        """Where array ``name`` is described, for messages (a file, or a dataset)."""

    def discard_stray_files(self) -> list[str]:
        """Remove temporary files that interrupted writes left in this set (names, relative
        to the set); call under the key's lease before resuming. Nothing by default."""
        return []

    def _finalize(self) -> None:
        """Backend hook run after the store is marked complete."""

    def _absent_chunk_files(self) -> dict[int, list[str]]:
        """Committed chunks whose features/valid chunk files are absent, with the absent
        keys (a file-per-chunk backend lists them; HDF5 has none to lose)."""
        return {}

    def _begin_repair(self) -> None:
        """Backend hook run before a complete set is marked incomplete for repair."""

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<FeatureStore {self.format} {self.path} key={self.key} "
                f"shape={self.metadata.get('n_samples')} complete={self.complete}>")

    # -- metadata ----------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.metadata["key"]

    @property
    def complete(self) -> bool:
        return bool(self.metadata.get("complete"))

    @property
    def n_samples(self) -> int:
        return int(self.metadata["n_samples"])

    @property
    def n_features(self) -> int:
        return int(self.metadata["n_features"])

    @property
    def n_views(self) -> int:
        return int(self.metadata.get("n_views") or 1)

    @property
    def chunk_rows(self) -> int:
        return int(self.metadata["chunk_rows"])

    @property
    def n_chunks(self) -> int:
        return schema.n_chunks(self.n_samples, self.chunk_rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._required(schema.FEATURES).shape)

    @property
    def classes(self) -> list[str] | None:
        return (self.metadata.get("dataset") or {}).get("classes")

    @property
    def task(self) -> str | None:
        return (self.metadata.get("dataset") or {}).get("task")

    # -- checks ------------------------------------------------------------------------
    def _required(self, name: str) -> Any:
        arr = self._array(name)
        if arr is None:
            raise StoreCorruptError(f"{self.path}: the array {name!r} is missing. "
                                    f"{whole_repair_hint(self.path)}")
        return arr

    def layout_problems(self) -> list[tuple[str, str]]:
        """``(array, problem)`` for every array that is missing or whose shape or chunks
        disagree with the metadata (so that no read can index past what exists)."""
        return layout_problems(self)

    def check_layout(self) -> None:
        """Raise StoreCorruptError if an array is missing or disagrees with the metadata."""
        problems = self.layout_problems()
        if problems:
            array, problem = problems[0]
            raise StoreCorruptError(f"{self.path}: {array}: {problem}. "
                                    f"{whole_repair_hint(self.path)}")

    def check_files(self) -> None:
        """Raise StoreDamagedError if a committed chunk's file is missing, or if a set
        marked complete lacks the record of a chunk (records cleared by hand or by a
        forged pack: such chunks would otherwise be read unchecked)."""
        if self.complete:
            unrecorded = sorted(set(range(self.n_chunks)) - self._committed_chunks())
            if unrecorded:
                raise StoreDamagedError(
                    f"{self.path} is damaged: it is marked complete but chunks "
                    f"{unrecorded[:10]}{'...' if len(unrecorded) > 10 else ''} have no "
                    f"recorded sha256. {chunk_repair_hint(self.path)}",
                    chunks=unrecorded, array=schema.FEATURES)
        damaged = self.damaged_chunk_files()
        if damaged:
            chunks = sorted(damaged)
            files = [f for i in chunks[:3] for f in damaged[i]]
            raise StoreDamagedError(
                f"{self.path} is damaged: the files of chunks {chunks[:10]}"
                f"{'...' if len(chunks) > 10 else ''} are missing ({', '.join(files)}), which "
                "would read as zeros. Rerun the `featstore extract` command that made the "
                f"set: only the damaged chunks are extracted again (`featstore verify "
                f"{self.path}` lists them).", chunks=chunks, array=schema.FEATURES)

    def damaged_chunk_files(self) -> dict[int, list[str]]:
        """Committed chunks whose features/valid files are missing and whose stand-in
        values (zarr reads a missing chunk as its fill value) differ from the record.
        A chunk of fill values is legitimately stored as no file at all."""
        absent = self._absent_chunk_files()
        if not absent:
            return {}
        recorded = self._recorded_digests()
        out = {}
        for i, keys in absent.items():
            a, b = schema.chunk_bounds(i, self.n_samples, self.chunk_rows)
            f = self._read(self._required(schema.FEATURES), slice(a, b), f"features chunk {i}",
                           schema.FEATURES)
            v = self._read(self._required(schema.VALID), slice(a, b), f"valid chunk {i}",
                           schema.VALID)
            if schema.chunk_digest(f, v) != recorded[i]:
                out[i] = keys
        return out

    # -- reading -----------------------------------------------------------------------
    def _read(self, arr: Any, key: Any, what: str, array: str) -> np.ndarray:
        """``arr[key]`` as numpy; a decoding or I/O failure becomes StoreDamagedError."""
        try:
            return np.asarray(arr[key])
        except (FeatstoreError, MemoryError):
            raise
        except Exception as err:
            from featstore.store.location import explain_storage_error

            if explain_storage_error(err) is not None:
                raise  # credentials, permissions, network: the CLI explains those
            raise read_error(self.path, array, what, err) from err

    def _recorded_digests(self) -> list[str]:
        if "chunks" not in self._records:
            arr = self._required(schema.CHUNK_SHA256)
            self._records["chunks"] = schema.as_str_list(
                self._read(arr, ..., "the chunk_sha256 array", schema.CHUNK_SHA256))
        return self._records["chunks"]

    def _raw_valid(self) -> np.ndarray:
        if "valid" not in self._records:
            self._records["valid"] = self._read(self._required(schema.VALID), ..., "the valid "
                                                "mask", schema.VALID).astype(bool, copy=False)
        return self._records["valid"]

    def _check_chunks(self, chunks: range, start: int, block: np.ndarray) -> None:
        """Compare whole chunks ``chunks`` (``block`` holds rows from ``start``) with
        their records; uncommitted chunks of an incomplete set have none."""
        recorded, valid = self._recorded_digests(), self._raw_valid()
        bad = []
        for i in chunks:
            if i >= len(recorded) or not recorded[i]:
                continue
            a, b = schema.chunk_bounds(i, self.n_samples, self.chunk_rows)
            if schema.chunk_digest(block[a - start:b - start], valid[a:b]) != recorded[i]:
                bad.append(i)
        if bad:
            raise StoreDamagedError(
                f"{self.path} is damaged: chunks {bad[:10]} (features and valid mask) do not "
                f"match their recorded sha256. {chunk_repair_hint(self.path)}",
                chunks=bad, array=schema.FEATURES)

    def _checked(self, name: str, values: Any) -> Any:
        """``values`` of array ``name``, compared with its digest when one is recorded."""
        recorded = self.metadata.get(schema.ARRAYS_SHA256) or {}
        if self.verify_reads and recorded.get(name) and digest_of(name, values) != recorded[name]:
            why = _WHY_DIFFERENT[name]
            hint = chunk_repair_hint(self.path) if name == schema.VALID else \
                whole_repair_hint(self.path)
            raise StoreDamagedError(f"{self.path} is damaged: its {name} differ from the "
                                    f"sha256 recorded for them ({why}). {hint}", array=name)
        return values

    @property
    def features(self) -> Any:
        """The on-disk features array (lazy; index it to read rows)."""
        return CheckedArray(self, self._required(schema.FEATURES))

    @property
    def labels(self) -> np.ndarray | None:
        arr = self._array(schema.LABELS)
        if arr is None:
            return None
        return self._checked(schema.LABELS, self._read(arr, ..., "the labels", schema.LABELS))

    @property
    def sample_ids(self) -> np.ndarray:
        raw = self._read(self._required(schema.SAMPLE_IDS), ..., "the sample ids",
                         schema.SAMPLE_IDS)
        ids = schema.as_str_list(raw)
        self._checked(schema.SAMPLE_IDS, ids)
        return np.array(ids, dtype=str)

    @property
    def valid(self) -> np.ndarray:
        self._records.pop("valid", None)  # read afresh: callers may hold on to the array
        return self._checked(schema.VALID, self._raw_valid()).copy()

    def load_features(self, *, as_torch: bool = False, dtype: Any = None) -> Any:
        """Read all features into memory (numpy, or a torch tensor with ``as_torch``);
        each chunk is checked against its sha256 unless ``verify_reads`` is off."""
        arr = self.features[...]
        if dtype is not None:
            arr = arr.astype(dtype, copy=False)
        if as_torch:
            import torch

            return torch.from_numpy(arr)
        return arr

    def load_labels(self, *, as_torch: bool = False) -> Any:
        y = self.labels
        if y is None or not as_torch:
            return y
        import torch

        return torch.from_numpy(y)

    def iter_chunks(self, *, as_torch: bool = False) -> Iterator[tuple[int, int, Any]]:
        """Yield ``(start, stop, features[start:stop])`` one stored chunk at a time, each
        checked against its sha256 unless ``verify_reads`` is off."""
        arr = self.features
        for i in range(self.n_chunks):
            start, stop = schema.chunk_bounds(i, self.n_samples, self.chunk_rows)
            block = arr[start:stop]
            if as_torch:
                import torch

                block = torch.from_numpy(block)
            yield start, stop, block

    def check_chunks(self) -> None:
        """Read every chunk (several per read) and compare it with its sha256; raise
        StoreDamagedError at the first damaged one. Nothing is read with
        ``verify_reads`` off. (``verify`` reports every problem instead of raising.)"""
        if not self.verify_reads:
            return
        arr, step = self.features, VERIFY_GROUP * self.chunk_rows
        for start in range(0, self.n_samples, step):
            arr[start:min(start + step, self.n_samples)]

    # -- writing (used by the extractor) -----------------------------------------------
    def _require_writable(self) -> None:
        if self.mode == "r":
            raise ReadOnlyStoreError(
                f"{self.path} is open read-only; open it with mode='r+' to write."
            )

    def chunk_digests(self) -> list[str]:
        """The sha256 recorded for every chunk, read afresh ('' for a chunk not committed):
        what a driver compares with the receipts of the workers that wrote the chunks."""
        self._records.pop("chunks", None)
        return list(self._recorded_digests())

    def committed_chunks(self) -> set[int]:
        """Chunks written, checksummed and still on disk (what a resumed run skips): a
        committed chunk whose file has gone is recomputed."""
        return self._committed_chunks() - set(self.damaged_chunk_files())

    def write_chunk(self, index: int, features: np.ndarray, valid: np.ndarray) -> str:
        """Write whole chunk ``index`` and then its checksum record; return the digest.

        The checksum is written after the data, so a chunk counts as committed only
        when its bytes are on disk. Writers owning disjoint chunks never collide.
        """
        self._require_writable()
        start, stop = schema.chunk_bounds(index, self.n_samples, self.chunk_rows)
        expected = (stop - start,) + tuple(self.shape[1:])
        if features.shape != expected:
            raise ValueError(f"chunk {index}: expected features {expected}, got {features.shape}")
        dtype = self._required(schema.FEATURES).dtype
        features = np.ascontiguousarray(features, dtype=dtype)
        valid = np.ascontiguousarray(valid, dtype=np.bool_)
        digest = schema.chunk_digest(features, valid)
        self._records.clear()
        try:
            self._write_rows(index, features, valid)
            self._write_digest(index, digest)
        except OSError as err:
            raise translate_os_error(err, self.path) from err
        return digest

    def mark_complete(self, **extra: Any) -> None:
        """Flag the store complete; this is the last write of an extraction. The valid
        mask's digest is recorded with it."""
        self._require_writable()
        missing = sorted(set(range(self.n_chunks)) - self.committed_chunks())
        if missing:
            raise StoreIncompleteError(
                f"{self.path}: cannot mark complete, chunks {missing[:10]} were never written."
            )
        self._records.clear()
        self.metadata.update(extra)
        digests = self.metadata.get(schema.ARRAYS_SHA256)
        digests = dict(digests) if isinstance(digests, dict) else {}
        digests[schema.VALID] = digest_of(schema.VALID, self._raw_valid())
        self.metadata[schema.ARRAYS_SHA256] = digests
        self.metadata["complete"] = True
        try:
            self._write_meta()
            self._finalize()
        except OSError as err:
            self.metadata["complete"] = False
            raise translate_os_error(err, self.path) from err

    def invalidate_chunks(self, indices: Any) -> None:
        """Mark chunks ``indices`` uncommitted and the set incomplete, so that resuming
        its extraction recomputes exactly them (the repair of a damaged set; call it
        while holding the key's lease). The set is marked incomplete first: a crash in
        between leaves an incomplete set whose resume recomputes missing files."""
        self._require_writable()
        chunks = sorted({int(i) for i in indices})
        if chunks and not 0 <= chunks[0] <= chunks[-1] < self.n_chunks:
            raise ValueError(f"chunk indices must be in [0, {self.n_chunks}), got {chunks}")
        try:
            self._begin_repair()
            self.metadata["complete"] = False
            digests = self.metadata.get(schema.ARRAYS_SHA256)
            if isinstance(digests, dict):
                digests.pop(schema.VALID, None)  # recorded again when complete
            self._write_meta()
            for i in chunks:
                self._write_digest(i, "")
        except OSError as err:
            raise translate_os_error(err, self.path) from err
        self._records.clear()

    # -- verification ------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Re-read every array (features and valid chunk by chunk, labels, sample ids,
        views) and compare each with its records; nothing is raised for damage found."""
        return verify_store(self)
