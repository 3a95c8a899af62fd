"""A feature set's integrity: checked reads, checks on open, `verify`, and repair.

What a set's commit records promise, and where featstore checks each promise:

========================  ==========================================  =======================
record                    promise                                     checked
========================  ==========================================  =======================
``chunk_sha256[i]``       chunk *i* of features + valid decodes to    every whole-chunk read
                          exactly these bytes                         of ``features``; verify
chunk files (Zarr)        every committed chunk of features and       opening a complete set;
                          valid has its file                          resume; verify
``arrays_sha256``         labels and sample ids (at creation), the    every read of
                          valid mask (when complete) are unchanged    ``labels``,
                                                                      ``sample_ids``,
                                                                      ``valid``; verify
array shapes              every array matches the metadata (rows,     every open; verify
                          views, features, chunks)
========================  ==========================================  =======================

Reads of rows that are not whole chunks (``store.features[5:9]``) are not hashed; the
file check at open still covers deleted chunks. ``FEATSTORE_VERIFY_READS=0`` (or
``open_store(..., verify_reads=False)``) turns the hashing of reads off where speed
matters; docs/storage.md measures what it costs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from featstore.errors import FeatstoreError, StoreCorruptError
from featstore.store import schema

if TYPE_CHECKING:  # pragma: no cover
    from featstore.store._base import FeatureStore

#: Environment variable read when ``open_store`` is not told: ``0`` turns off the
#: hashing of reads (checks on open stay on). The CLI commands inherit it.
VERIFY_ENV = "FEATSTORE_VERIFY_READS"

#: Chunks `verify` reads per call (a remote store fetches them concurrently).
VERIFY_GROUP = 16


def default_verify_reads() -> bool:
    """Whether reads are hashed when the caller does not say: on, unless the
    environment variable FEATSTORE_VERIFY_READS is 0/false/no/off."""
    return os.environ.get(VERIFY_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


class StoreDamagedError(StoreCorruptError):
    """A set's bytes or files do not match its commit records.

    ``chunks`` names the damaged row chunks when they are known (re-extracting them
    repairs the set); ``array`` names the array found damaged.
    """

    def __init__(self, message: str, *, chunks: list[int] | None = None, array: str = ""):
        super().__init__(message)
        self.chunks = list(chunks or [])
        self.array = array


def chunk_repair_hint(path: Any) -> str:
    """How to repair damaged feature chunks (the end of every such message)."""
    return (f"Run `featstore verify {path} --repair`, then rerun the `featstore extract` "
            "command that made the set: only the damaged chunks are extracted again.")


def whole_repair_hint(path: Any) -> str:
    """How to repair damage no chunk can fix (labels, sample ids, array layout)."""
    return (f"`featstore verify {path}` lists the damage; labels, sample ids and the array "
            "layout cannot be repaired chunk by chunk: rerun the `featstore extract` command "
            "that made the set with --force to extract it again.")


def read_error(path: Any, array: str, what: str, err: BaseException) -> StoreDamagedError:
    """A decoding or I/O failure of ``what`` as one clear error, never a codec traceback."""
    hint = chunk_repair_hint(path) if array in (schema.FEATURES, schema.VALID) else \
        whole_repair_hint(path)
    return StoreDamagedError(
        f"{path}: {what} cannot be read or decoded ({type(err).__name__}: "
        f"{str(err)[:200]}): a file is truncated or damaged, or the storage failed. {hint}",
        array=array)


def row_range(key: Any, n: int) -> tuple[int, int] | None:
    """The row range ``[start, stop)`` a selection reads in full along every other axis,
    or None (fancy indices, steps, partial columns: not a whole-chunk read)."""
    def full(k: Any) -> bool:
        return k is Ellipsis or (isinstance(k, slice) and k == slice(None))

    if isinstance(key, tuple):
        if not key:
            return 0, n
        if not all(full(k) for k in key[1:]):
            return None
        key = key[0]
    if key is Ellipsis:
        return 0, n
    if isinstance(key, slice):
        start, stop, step = key.indices(n)
        if step == 1 and stop > start:
            return start, stop
    return None


class CheckedArray:
    """A store's ``features`` array, lazy like the zarr/h5py array it wraps.

    Every read that covers whole chunks (``a[...]``, ``a[:]``, ``a[start:stop]`` on
    chunk boundaries) is compared with the chunks' recorded sha256; a read that fails
    to decode raises :class:`StoreDamagedError` instead of a codec's own exception.
    Attributes (``shape``, ``dtype``, ``chunks``, ...) are the wrapped array's.
    """

    def __init__(self, store: "FeatureStore", array: Any):
        self._store, self._array = store, array

    def __getattr__(self, name: str) -> Any:
        return getattr(self._array, name)

    def __len__(self) -> int:
        return int(self._array.shape[0])

    def __repr__(self) -> str:
        return f"<checked {self._array!r}>"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[key] = value

    def __getitem__(self, key: Any) -> np.ndarray:
        store = self._store
        rows = store.chunk_rows
        span = row_range(key, store.n_samples)
        what = f"features rows {key}" if span is None else (
            f"features rows {span[0]}–{span[1]} (chunks {span[0] // rows}–"
            f"{(span[1] - 1) // rows})")
        block = store._read(self._array, key, what, schema.FEATURES)
        if span is not None and store.verify_reads:
            start, stop = span
            if start % rows == 0 and (stop % rows == 0 or stop == store.n_samples):
                store._check_chunks(range(start // rows, -(-stop // rows)), start, block)
        return block


def layout_problems(store: "FeatureStore") -> list[tuple[str, str]]:
    """``(array, problem)`` for every array that is missing or whose shape or chunks
    disagree with the metadata (so that no read can index past what exists)."""
    n, k, d = store.n_samples, store.n_views, store.n_features
    recorded = store.metadata.get(schema.ARRAYS_SHA256) or {}
    want = {schema.FEATURES: (n, k, d) if k > 1 else (n, d), schema.VALID: (n,),
            schema.SAMPLE_IDS: (n,), schema.CHUNK_SHA256: (store.n_chunks,)}
    if schema.LABELS in recorded and recorded[schema.LABELS] is not None:
        want[schema.LABELS] = (n,)
    problems = []
    for name in (schema.FEATURES, schema.VALID, schema.LABELS, schema.SAMPLE_IDS,
                 schema.CHUNK_SHA256):
        try:
            arr = store._array(name)
        except StoreCorruptError as err:
            problems.append((name, str(err)))
            continue
        if arr is None:
            if name in want:
                problems.append((name, f"the array is missing ({store._array_file(name)})"))
            continue
        if not hasattr(arr, "shape"):  # a group where an array belongs
            problems.append((name, "not an array"))
            continue
        shape = tuple(arr.shape)
        if name in want and shape != want[name]:
            problems.append((name, f"shape {shape}, but the metadata says {want[name]}"))
        elif name == schema.LABELS and shape != (n,):
            problems.append((name, f"shape {shape}, but the set has {n} samples"))
    rows = min(store.chunk_rows, max(n, 1))
    for name in (schema.FEATURES, schema.VALID):
        chunks = getattr(store._array(name), "chunks", None) if not any(
            a == name for a, _ in problems) else None
        if store.row_chunk_files and chunks and chunks[0] not in (rows, store.chunk_rows):
            problems.append((name, f"chunks of {chunks[0]} rows, but the metadata says "
                                   f"{store.chunk_rows}"))
    views = store.metadata.get("views")
    if isinstance(views, dict) and views.get("count") not in (None, k):
        problems.append(("views", f"metadata says {views.get('count')} views in 'views' "
                                  f"but n_views is {k}"))
    return problems


# -- `featstore verify` -----------------------------------------------------------------
#: The arrays a report speaks of, in the order they are listed.
ARRAYS = (schema.FEATURES, schema.VALID, schema.LABELS, schema.SAMPLE_IDS, "views",
          schema.CHUNK_SHA256)


@dataclass
class VerifyReport:
    """What :meth:`FeatureStore.verify` found.

    ``mismatched`` lists the row chunks whose features/valid bytes (or files) differ
    from their records: re-extracting them repairs the set. ``problems`` lists the rest
    (labels, sample ids, layout), which only a full re-extraction repairs. ``arrays``
    holds every problem by array name; ``unchecked`` names arrays a legacy set has no
    record for.
    """

    path: str
    complete: bool
    n_chunks: int
    chunks_ok: int
    missing: list[int] = field(default_factory=list)    # chunks never committed
    mismatched: list[int] = field(default_factory=list)  # bytes or files differ from records
    problems: list[str] = field(default_factory=list)
    arrays: dict[str, list[str]] = field(default_factory=lambda: {a: [] for a in ARRAYS})
    unchecked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.complete and not self.missing and not self.mismatched and not self.problems

    @property
    def repairable(self) -> bool:
        """Damage confined to feature chunks: re-extracting ``mismatched`` repairs it."""
        return bool(self.mismatched) and not self.problems

    def chunk_problem(self, array: str, index: int, problem: str) -> None:
        if index not in self.mismatched:
            self.mismatched.append(index)
        self.arrays.setdefault(array, []).append(f"chunk {index}: {problem}")

    def array_problem(self, array: str, problem: str) -> None:
        self.arrays.setdefault(array, []).append(problem)
        self.problems.append(f"{array}: {problem}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "ok": self.ok, "complete": self.complete,
            "n_chunks": self.n_chunks, "chunks_ok": self.chunks_ok,
            "missing_chunks": self.missing, "mismatched_chunks": sorted(self.mismatched),
            "problems": self.problems, "arrays": self.arrays, "unchecked": self.unchecked,
            "repairable": self.repairable,
        }


def _runs(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive runs of ``indices``, each at most ``size`` long."""
    out: list[list[int]] = []
    for i in indices:
        if out and out[-1][-1] == i - 1 and len(out[-1]) < size:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def _attempt(report: VerifyReport, array: str, fn: Any) -> Any:
    """``fn()``, or None with the failure recorded against ``array``."""
    try:
        return fn()
    except (FeatstoreError, MemoryError):
        raise
    except Exception as err:  # undecodable: report it, keep checking the rest
        report.array_problem(array, f"cannot be read ({type(err).__name__}: {str(err)[:200]})")
        return None


def digest_of(name: str, values: Any) -> str:
    """The whole-array digest recorded in ``arrays_sha256`` for array ``name`` ("" for
    values that cannot be hashed so, such as objects in a forged array: never a match)."""
    try:
        if name == schema.SAMPLE_IDS:
            return schema.ids_digest(values)
        if name == schema.VALID:
            return schema.array_digest(np.asarray(values, dtype=bool))
        return schema.array_digest(np.asarray(values))
    except (TypeError, ValueError, UnicodeError):
        return ""


def verify_store(store: "FeatureStore") -> VerifyReport:
    """Re-read every array of ``store`` and compare it with its records."""
    report = VerifyReport(str(store.path), store.complete, store.n_chunks, 0)
    broken = set()
    for array, problem in store.layout_problems():
        report.array_problem(array, problem)
        broken.add(array)
    valid_differs = _verify_small_arrays(store, report, broken)
    digests = store._array(schema.CHUNK_SHA256)
    recorded = None
    if digests is None and schema.CHUNK_SHA256 not in broken:
        report.array_problem(schema.CHUNK_SHA256, "missing: not written by featstore extract")
    elif digests is not None:
        recorded = _attempt(report, schema.CHUNK_SHA256,
                            lambda: schema.as_str_list(digests[...]))
    if recorded is not None and not broken & {schema.FEATURES, schema.VALID}:
        _verify_chunks(store, report, recorded, valid_differs)
    if valid_differs:
        what = "values differ from the sha256 recorded when the set was completed"
        if report.mismatched:  # the damaged chunks explain it: re-extracting them repairs it
            report.arrays[schema.VALID].append(what)
        else:
            report.array_problem(schema.VALID, what)
    return report


def _verify_chunks(store: "FeatureStore", report: VerifyReport, recorded: list[str],
                   valid_differs: bool) -> None:
    feats, valid_arr = store._array(schema.FEATURES), store._array(schema.VALID)
    absent = store._absent_chunk_files()
    todo = []
    for i in range(store.n_chunks):
        if i >= len(recorded) or not recorded[i]:
            report.missing.append(i)
        else:
            todo.append(i)
    # Read several chunks per call: a remote store fetches them concurrently.
    for group in _runs(todo, VERIFY_GROUP):
        start = schema.chunk_bounds(group[0], store.n_samples, store.chunk_rows)[0]
        stop = schema.chunk_bounds(group[-1], store.n_samples, store.chunk_rows)[1]
        try:
            block_f, block_v = np.asarray(feats[start:stop]), np.asarray(valid_arr[start:stop])
        except Exception:
            block_f = block_v = None  # an undecodable chunk: read them one by one
        for i in group:
            a, b = schema.chunk_bounds(i, store.n_samples, store.chunk_rows)
            if block_f is not None:
                f, v = block_f[a - start:b - start], block_v[a - start:b - start]
            else:  # which of the two arrays fails to decode names the damaged one
                f = _chunk_or_problem(report, schema.FEATURES, i, lambda: feats[a:b])
                v = _chunk_or_problem(report, schema.VALID, i, lambda: valid_arr[a:b])
                if f is None or v is None:
                    continue
            got = schema.chunk_digest(f, v)
            if got == recorded[i]:
                report.chunks_ok += 1
            elif absent.get(i):
                for key in absent[i]:
                    report.chunk_problem(key.split("/")[0], i, f"file {key} is missing")
            else:
                report.chunk_problem(schema.VALID if valid_differs else schema.FEATURES, i,
                                     f"rows {a}–{b} decode to bytes that differ from the "
                                     "recorded sha256")


def _chunk_or_problem(report: VerifyReport, array: str, index: int, read: Any) -> Any:
    try:
        return np.asarray(read())
    except (FeatstoreError, MemoryError):
        raise
    except Exception as err:  # undecodable chunk: report it, keep checking
        report.chunk_problem(array, index, f"cannot be read ({type(err).__name__}: "
                                           f"{str(err)[:200]})")
        return None


def _verify_small_arrays(store: "FeatureStore", report: VerifyReport, broken: set[str]) -> bool:
    """labels and sample_ids against their whole-array digests (problems reported);
    returns whether the valid mask differs from its digest (reported by the caller)."""
    recorded = store.metadata.get(schema.ARRAYS_SHA256)
    if not isinstance(recorded, dict):
        recorded = {}
    valid_differs = False
    for name in (schema.LABELS, schema.SAMPLE_IDS, schema.VALID):
        arr = None if name in broken else store._array(name)
        if arr is None:
            continue  # absent where it should be: a layout problem, already reported
        if name == schema.VALID:
            try:
                values = arr[...]
            except Exception:  # a chunk that does not decode: the chunk loop names it
                valid_differs = True
                continue
        else:
            values = _attempt(report, name, lambda: arr[...])
            if values is None:
                continue
        if name == schema.SAMPLE_IDS:
            ids = schema.as_str_list(values)
            if len(set(ids)) != len(ids):
                report.array_problem(name, "sample ids are not unique")
        if recorded.get(name) is None:
            if name != schema.VALID:  # valid is recorded only once complete
                report.unchecked.append(name)
            continue
        if digest_of(name, values) == recorded[name]:
            continue
        if name == schema.VALID:
            valid_differs = True
        else:
            why = "relabelled rows or damaged bytes" if name == schema.LABELS else \
                "renamed or damaged ids"
            report.array_problem(name, f"values differ from the sha256 recorded when the set "
                                       f"was created ({why})")
    return valid_differs


def mark_for_reextraction(path: Any, *, lease_seconds: float = 60.0) -> list[int] | None:
    """Under the key's lease: verify the set at ``path`` and clear the commit records of
    its damaged chunks, marking it incomplete, so that rerunning the extraction that
    made it recomputes only those chunks.

    Returns the chunks marked (empty if nothing was damaged), or None if another
    writer holds the key's lease (it is busy with the set; nothing was changed).
    Raises StoreCorruptError for damage no chunk can repair (labels, sample ids, layout).
    """
    from featstore.store import open_store
    from featstore.store.lease import LeaseBusyError, hold_lease
    from featstore.store.location import as_path

    path = as_path(path)
    with open_store(path, allow_incomplete=True, allow_damaged=True) as fs:
        key = fs.key
    try:
        # Nothing is left behind: the next writer of the key takes a fresh lease.
        with hold_lease(path.parent, key, seconds=lease_seconds, wait=False) as lease, \
                open_store(path, "r+", allow_incomplete=True, allow_damaged=True) as fs:
            report = fs.verify()
            if report.problems:
                raise StoreCorruptError(
                    f"{path} is damaged beyond its feature chunks: "
                    f"{'; '.join(report.problems[:3])}. {whole_repair_hint(path)}")
            chunks = sorted(report.mismatched)
            if chunks:
                lease.check()  # verifying a big set may outlast a stalled renewal
                fs.invalidate_chunks(chunks)
            return chunks
    except LeaseBusyError:
        return None
