"""`featstore copy`: move complete feature sets between roots (local, shared, s3://...).

Only what the destination lacks moves, file by file (a Zarr set is one small file
per chunk), several at a time, into the set's working path at the destination (its
backend says where: the folder itself for Zarr, ``KEY.h5.partial`` for HDF5). Each file
is written atomically. The files that say ``complete`` (the backend's completion files:
Zarr's group metadata) are written last — first as *incomplete*, then every chunk is
re-read at the destination and checked against its recorded sha256 (files that no
chunk checksum covers — sample ids, labels, array metadata — are read back and
compared byte for byte), and only then as they are, and the backend commits the set
(HDF5: renamed to its final name) — so an interrupted or damaged copy never reads as
complete, and rerunning the same command resumes it. The copy holds the destination
key's lease, so it never races an extraction of the same key there.

A store folder holding a symbolic link (at the source, or in a partial set at the
destination) is refused, not followed: a link's target is no part of the set, and
following it would copy any file the link names, or write through it outside the root.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from featstore.errors import FeatstoreError, NotFoundError, StoreCorruptError, StoreNotFoundError
from featstore.store import FeatureStore, Root, location, open_store
from featstore.store.lease import FinishedMeanwhile, Lease, hold_lease
from featstore.store.integrity import StoreDamagedError
from featstore.store.root import Entry

log = logging.getLogger(__name__)

TRANSFERS = 8             # files copied at once


@dataclass
class CopyResult:
    """What happened to one feature set."""

    key: str
    src: str
    dst: str
    status: str                 # copied | up to date | would copy | busy | skipped
    files: int = 0              # files in the set
    files_copied: int = 0
    bytes_copied: int = 0
    verified: bool = False
    reason: str = ""
    missing: list[str] = field(default_factory=list)  # files to copy (dry run: first 20)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def links_in(path: Any) -> list[tuple[str, str]]:
    """(name relative to ``path``, target) of every symbolic link at or under a local
    store path, without following any; object stores have no links (empty list)."""
    path = location.as_path(path)
    if location.is_remote(path):
        return []
    if path.is_symlink():
        return [("", os.readlink(path))]
    found = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                found.append((os.path.relpath(full, path), os.readlink(full)))
    return sorted(found)


def refuse_links(path: Any, doing: str, *, where: str = "") -> None:
    """Raise a clear error naming the first link in a store (see :func:`links_in`)."""
    links = links_in(path)
    if not links:
        return
    rel, target = links[0]
    name = f"{path}/{rel}" if rel else str(path)
    more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
    raise StoreCorruptError(
        f"Refusing to {doing}: {name} is a symbolic link (to {target}){more}{where}. featstore "
        "never writes links into a set and does not follow them: a link could send or "
        "overwrite any file it points to. Replace it by the file itself, or remove the set "
        "(`featstore rm`) and extract it again.")


def read_local(path: Any) -> Any:
    """A local file opened for reading without following a link at its name (a link put
    there after the check above is refused by the OS, not read)."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        return os.fdopen(os.open(path, flags), "rb")
    except OSError as err:
        if os.path.islink(path):
            raise StoreCorruptError(f"Refusing to read {path}: it is a symbolic link.") from err
        raise


def _read(path: Any) -> bytes:
    if location.is_remote(location.as_path(path)):
        return path.read_bytes()
    with read_local(path) as f:
        return f.read()


def select(root: Root, *, keys: tuple[str, ...] = (), backbone: str | None = None,
           dataset: str | None = None) -> list[Entry]:
    """The complete sets of ``root`` named by key prefixes and/or filters (all if none)."""
    entries = root.entries(backbone=backbone, dataset=dataset)
    if keys:
        entries = [e for e in entries if any(e.key.startswith(k) for k in keys)]
        for k in keys:
            if not any(e.key.startswith(k) for e in entries):
                raise StoreNotFoundError(
                    f"No feature set with a key starting {k!r} in {root.path}"
                    + (" matching the filters" if backbone or dataset else "")
                    + f". See `featstore ls {root.path}`.")
    return entries


def copy_root(src: Any, dst: Any, *, keys: tuple[str, ...] = (), backbone: str | None = None,
              dataset: str | None = None, dry_run: bool = False, progress: bool = True,
              lease_seconds: float = 60.0,
              on_result: Callable[[CopyResult], None] | None = None) -> list[CopyResult]:
    """Copy the complete feature sets of root ``src`` (or those selected) into ``dst``."""
    src_root, dst_root = Root(src), Root(dst)
    if not src_root.path.is_dir():
        raise NotFoundError(f"Source root {src} does not exist (or is empty). "
                             "Check the path or URL and your credentials.")
    results = []
    entries = select(src_root, keys=keys, backbone=backbone, dataset=dataset)
    for entry in entries:  # all checked before anything is copied
        if entry.complete:
            _refuse_links(entry, dst_root)
    for entry in entries:
        if not entry.complete:
            r = CopyResult(entry.key, str(entry.path), "", "skipped",
                           reason="incomplete at the source (its extraction never finished)")
        else:
            r = copy_set(entry, dst_root, dry_run=dry_run, progress=progress,
                         lease_seconds=lease_seconds)
        results.append(r)
        if on_result is not None:
            on_result(r)
    return results


def copy_set(entry: Entry, dst_root: Root, *, dry_run: bool = False, progress: bool = True,
             lease_seconds: float = 60.0) -> CopyResult:
    """Copy one complete set; resumes a partial copy; verifies before marking complete."""
    backend = entry.backend
    dst = dst_root.path_for(entry.key, entry.format)
    result = CopyResult(entry.key, str(entry.path), str(dst), "copied")
    _refuse_links(entry, dst_root)
    if entry.metadata.get("key") != entry.key:
        result.status = "skipped"
        result.reason = (f"its metadata says key {entry.metadata.get('key')}, not its name: it "
                         "was renamed by hand; not copied")
        return result
    if _up_to_date(backend, dst, result):
        return result
    src_files = backend.files(entry.path)
    result.files = len(src_files)
    if dry_run:
        todo = _plan(backend, entry.path, backend.working_path(dst), src_files)
        result.status = "would copy"
        result.missing = todo[:20]
        result.files_copied = len(todo)
        result.bytes_copied = sum(src_files[n] for n in todo)
        return result
    location.makedirs(dst_root.path)
    # The destination key's lease: no extraction, copy or unpack of it runs meanwhile.
    try:
        with hold_lease(dst_root.path, entry.key, seconds=lease_seconds, what=str(dst),
                        on_wait=lambda holder: _up_to_date(backend, dst, result) or None
                        ) as lease:
            if _up_to_date(backend, dst, result):
                return result  # the writer there finished it just before
            _replace_damaged(dst)
            working = backend.working_path(dst)
            todo = _plan(backend, entry.path, working, src_files)
            _remove_strays(backend, working, src_files)
            _send(backend, entry, working, todo, src_files, result, progress, lease)
            _complete(backend, entry, working, dst, src_files, result, lease)
    except FinishedMeanwhile:
        pass  # the writer there finished it (result says "up to date")
    return result


def _refuse_links(entry: Entry, dst_root: Root) -> None:
    """No link in the source set, nor in a partial copy of it at the destination."""
    refuse_links(entry.path, f"copy {entry.key}")
    dst = dst_root.path_for(entry.key, entry.format)
    working = entry.backend.working_path(dst)
    for there in (dst,) if working == dst else (dst, working):
        refuse_links(there, f"copy {entry.key} there",
                     where=", in the partial copy at the destination")


def _up_to_date(backend: type[FeatureStore], dst: Any, result: CopyResult) -> bool:
    """True (and ``result`` says so) if ``dst`` already holds the complete set."""
    try:
        with open_store(dst) as there:
            if there.key != result.key:
                raise StoreCorruptError(
                    f"{dst} holds key {there.key}, not {result.key} (renamed by hand). "
                    "Remove it with `featstore rm`, then copy again.")
    except StoreDamagedError:
        return False  # a complete set with files missing: replaced under the lease
    except StoreCorruptError:
        raise
    except FeatstoreError:
        return False  # absent, or a partial copy to finish
    result.status = "up to date"
    result.files = len(backend.files(dst))
    return True


def _plan(backend: type[FeatureStore], src: Any, working: Any,
          src_files: dict[str, int]) -> list[str]:
    """The files to send to ``working``, the completion files last.

    Files covered by the chunk checksums already there with the source's size are
    kept (``verify`` checks them against the recorded sha256 afterwards); every other
    file is small and always sent. A partial destination with another array layout
    (other chunk rows or codec: its layout files differ) is not resumed but replaced.
    """
    have = backend.files(working)
    for name in backend.layout_files:
        if name in have and location.join(working, name).read_bytes() != \
                location.join(src, name).read_bytes():
            log.warning("%s holds a partial set with another layout; replacing it", working)
            location.remove(working)
            have = {}
            break
    last = [n for n in backend.completion_files if n in src_files]
    todo = sorted(n for n, size in src_files.items() if n not in last and not (
        backend.checksummed(n) and have.get(n) == size))
    return todo + last  # written last: first as incomplete


def _replace_damaged(dst: Any) -> None:
    """Remove a destination set that reads as complete but fails its commit records
    (a chunk file missing): it is copied again from the source. Call under the lease."""
    try:
        with open_store(dst):
            return
    except StoreDamagedError as err:
        log.warning("%s is damaged (%s); copying it again", dst, err)
        location.remove(dst)
    except FeatstoreError:
        return


def _remove_strays(backend: type[FeatureStore], working: Any,
                   src_files: dict[str, int]) -> None:
    """Remove files of a partial destination set that the source lacks.

    A copy killed mid-transfer leaves the temporary files of the writes in flight
    (``.NAME.XXXX.tmp``); the rerun, holding the key's lease, removes them so that the
    finished set holds exactly the source's files (found by tests/test_crash.py).
    """
    for name in sorted(set(backend.files(working)) - set(src_files)):
        log.info("removing %s from the partial copy at %s (not in the source)", name, working)
        location.remove(backend.member_path(working, name))


def _bar(total: int, desc: str, progress: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False,
                disable=None if progress else True, dynamic_ncols=True)


def _copy_one(src: Any, dst: Any, data: bytes | None = None, *, read_back: bool = True) -> int:
    """Copy one file atomically (and read it back to compare); return its size."""
    if data is None:
        data = _read(src)
    location.put_atomic(dst, data)
    if read_back and _sha(dst.read_bytes()) != _sha(data):
        raise StoreCorruptError(f"{dst}: the bytes read back differ from {src}; check the "
                                "destination's storage and copy again.")
    return len(data)


def _send(backend: type[FeatureStore], entry: Entry, working: Any, todo: list[str],
          src_files: dict[str, int], result: CopyResult, progress: bool, lease: Lease) -> None:
    """Copy the files ``todo`` but the completion files, several at a time."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    names = [n for n in todo if n not in backend.completion_files]
    bar = _bar(sum(src_files[n] for n in names), entry.key[:12], progress)
    try:
        # Several transfers in flight: object stores answer each request with latency.
        with ThreadPoolExecutor(TRANSFERS) as pool:
            futures = [pool.submit(_copy_one, backend.member_path(entry.path, name),
                                   backend.member_path(working, name),
                                   read_back=not backend.checksummed(name))
                       for name in names]
            try:
                for future in as_completed(futures):
                    n = future.result()
                    bar.update(n)
                    result.files_copied += 1
                    result.bytes_copied += n
                    lease.check()
            except BaseException:
                for f in futures:
                    f.cancel()
                raise
    finally:
        bar.close()


def _complete(backend: type[FeatureStore], entry: Entry, working: Any, dst: Any,
              src_files: dict[str, int], result: CopyResult, lease: Lease) -> None:
    """Write the completion files marked incomplete, verify every chunk, then write them
    as they are and commit the set: it reads as complete only once it is verified."""
    finals = {name: _read(backend.member_path(entry.path, name))
              for name in backend.completion_files if name in src_files}
    for name, data in finals.items():
        location.put_atomic(backend.member_path(working, name),
                            backend.marked_incomplete(name, data))
    try:
        _verify(working)
    except StoreCorruptError:
        location.remove(working)  # a rerun starts from scratch, not from damaged files
        raise
    lease.check()
    for name, data in finals.items():
        result.bytes_copied += _copy_one(backend.member_path(entry.path, name),
                                         backend.member_path(working, name), data)
        result.files_copied += 1
    backend.commit(working, dst)
    result.verified = True


def _verify(path: Any) -> None:
    with open_store(path, allow_incomplete=True) as store:
        report = store.verify()
    if report.missing or report.mismatched or report.problems:
        raise StoreCorruptError(
            f"{path}: after the copy, chunks {(report.missing + report.mismatched)[:10]} do not "
            f"match the checksums recorded at the source "
            f"({'; '.join(report.problems[:3]) or 'bytes differ'}). Run `featstore verify` on "
            "the source: if it fails, the source is damaged; if it passes, the transfer was, "
            "and rerunning the copy sends everything again. Nothing at the destination reads "
            "as complete.")
