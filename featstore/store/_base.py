"""The backend-independent part of a feature store: reading, checks, verification."""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

import errno

from ..errors import DiskFullError, ReadOnlyStoreError, StoreIncompleteError
from . import schema
from .location import as_path

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


#: Chunks `verify` reads per call (a remote store fetches them concurrently).
VERIFY_GROUP = 16


def _runs(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``indices``, each at most ``size`` long."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][-1] == i - 1 and len(out[-1]) < size:
            out[-1].append(i)
        else:
            out.append([i])
    return out


@dataclass
class VerifyReport:
    """What :meth:`FeatureStore.verify` found."""

    path: str
    complete: bool
    n_chunks: int
    chunks_ok: int
    missing: list[int] = field(default_factory=list)    # chunks never committed
    mismatched: list[int] = field(default_factory=list)  # bytes differ from their checksum
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete and not self.missing and not self.mismatched and not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "ok": self.ok, "complete": self.complete,
            "n_chunks": self.n_chunks, "chunks_ok": self.chunks_ok,
            "missing_chunks": self.missing, "mismatched_chunks": self.mismatched,
            "problems": self.problems,
        }


class FeatureStore(abc.ABC):
    """One feature set: features, labels, sample ids, validity and metadata.

    Obtain one with :func:`featstore.open_store`; use it as a context manager.
    ``features`` is the lazy on-disk array (zarr or h5py); :meth:`load_features`
    reads it into memory, :meth:`iter_chunks` streams it chunk by chunk.
    """

    format: str = ""
    suffix: str = ""

    def __init__(self, path: Path, mode: Mode):
        self.path = as_path(path)
        self.mode = mode
        self.metadata: dict[str, Any] = {}

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

    def _finalize(self) -> None:
        """Backend hook run after the store is marked complete."""

    # -- context manager ---------------------------------------------------------------
    def __enter__(self) -> "FeatureStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<FeatureStore {self.format} {self.path} key={self.key} "
                f"shape={self.shape} complete={self.complete}>")

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
        return tuple(self._array(schema.FEATURES).shape)

    @property
    def classes(self) -> list[str] | None:
        return (self.metadata.get("dataset") or {}).get("classes")

    @property
    def task(self) -> str | None:
        return (self.metadata.get("dataset") or {}).get("task")

    # -- reading -----------------------------------------------------------------------
    @property
    def features(self) -> Any:
        """The on-disk features array (lazy; index it to read rows)."""
        return self._array(schema.FEATURES)

    @property
    def labels(self) -> np.ndarray | None:
        arr = self._array(schema.LABELS)
        return None if arr is None else np.asarray(arr[...])

    @property
    def sample_ids(self) -> np.ndarray:
        return np.array(schema.as_str_list(self._array(schema.SAMPLE_IDS)[...]), dtype=str)

    @property
    def valid(self) -> np.ndarray:
        return np.asarray(self._array(schema.VALID)[...], dtype=bool)

    def load_features(self, *, as_torch: bool = False, dtype: Any = None) -> Any:
        """Read all features into memory (numpy, or a torch tensor with ``as_torch``)."""
        arr = np.asarray(self.features[...])
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
        """Yield ``(start, stop, features[start:stop])`` one stored chunk at a time."""
        arr = self.features
        for i in range(self.n_chunks):
            start, stop = schema.chunk_bounds(i, self.n_samples, self.chunk_rows)
            block = np.asarray(arr[start:stop])
            if as_torch:
                import torch

                block = torch.from_numpy(block)
            yield start, stop, block

    # -- writing (used by the extractor) -----------------------------------------------
    def _require_writable(self) -> None:
        if self.mode == "r":
            raise ReadOnlyStoreError(
                f"{self.path} is open read-only; open it with mode='r+' to write."
            )

    def committed_chunks(self) -> set[int]:
        """Chunks already written and checksummed (what a resumed run skips)."""
        return self._committed_chunks()

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
        dtype = self.features.dtype
        features = np.ascontiguousarray(features, dtype=dtype)
        valid = np.ascontiguousarray(valid, dtype=np.bool_)
        digest = schema.chunk_digest(features, valid)
        try:
            self._write_rows(index, features, valid)
            self._write_digest(index, digest)
        except OSError as err:
            raise translate_os_error(err, self.path) from err
        return digest

    def mark_complete(self, **extra: Any) -> None:
        """Flag the store complete; this is the last write of an extraction."""
        self._require_writable()
        missing = sorted(set(range(self.n_chunks)) - self._committed_chunks())
        if missing:
            raise StoreIncompleteError(
                f"{self.path}: cannot mark complete, chunks {missing[:10]} were never written."
            )
        self.metadata.update(extra)
        self.metadata["complete"] = True
        try:
            self._write_meta()
            self._finalize()
        except OSError as err:
            self.metadata["complete"] = False
            raise translate_os_error(err, self.path) from err

    # -- verification ------------------------------------------------------------------
    def verify(self) -> VerifyReport:
        """Re-read every chunk and compare it with its recorded sha256."""
        digests = self._array(schema.CHUNK_SHA256)
        report = VerifyReport(str(self.path), self.complete, self.n_chunks, 0)
        if digests is None:
            report.problems.append("no chunk_sha256 array: not written by featstore extract")
            return report
        recorded = schema.as_str_list(digests[...])
        committed = self._committed_chunks()
        feats, valid_arr = self.features, self._array(schema.VALID)
        todo = []
        for i in range(self.n_chunks):
            if i not in committed or not recorded[i]:
                report.missing.append(i)
            else:
                todo.append(i)
        # Read several chunks per call: a remote store fetches them concurrently.
        for group in _runs(todo, VERIFY_GROUP):
            start = schema.chunk_bounds(group[0], self.n_samples, self.chunk_rows)[0]
            stop = schema.chunk_bounds(group[-1], self.n_samples, self.chunk_rows)[1]
            try:
                block_f, block_v = np.asarray(feats[start:stop]), np.asarray(valid_arr[start:stop])
            except Exception:
                block_f = block_v = None  # an undecodable chunk: read them one by one
            for i in group:
                a, b = schema.chunk_bounds(i, self.n_samples, self.chunk_rows)
                try:
                    if block_f is not None:
                        f, v = block_f[a - start:b - start], block_v[a - start:b - start]
                    else:
                        f, v = np.asarray(feats[a:b]), np.asarray(valid_arr[a:b])
                    got = schema.chunk_digest(f, v)
                except Exception as err:  # undecodable chunk: report it, keep checking
                    report.problems.append(
                        f"chunk {i}: cannot be read ({type(err).__name__}: {err})")
                    report.mismatched.append(i)
                    continue
                if got != recorded[i]:
                    report.mismatched.append(i)
                else:
                    report.chunks_ok += 1
        ids = self.sample_ids
        if len(set(ids.tolist())) != len(ids):
            report.problems.append("sample_ids are not unique")
        if len(ids) != self.n_samples:
            report.problems.append(f"{len(ids)} sample ids for {self.n_samples} samples")
        return report
