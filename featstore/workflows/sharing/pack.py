"""`featstore pack` / `unpack`: feature sets in one zip file, for sending by hand.

A pack holds ``<key>.zarr/...`` folders or ``<key>.h5`` files and a manifest,
``featstore-pack.json``, with every file's sha256 and size. A pack comes from someone
else, so unpacking trusts none of it (:mod:`.packcheck` checks it all first):

1. before anything is read or written, every member's name, type and sizes are checked
   (see :func:`.packcheck.check_pack`), and the manifest against the members;
2. each set is then streamed, in 1 MiB blocks, into a staging folder inside the root,
   every file bounded by its manifest size and checked against its sha256, then the
   set's chunk checksums; the key's lease is held (and renewed) meanwhile;
3. only then is the set renamed into place; on any failure the staging folder goes.

So a hostile or damaged pack never writes outside the root and never leaves a set that
reads as complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import time
import uuid
import zipfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from featstore.errors import (AlreadyExistsError, DiskFullError, FeatstoreError, NotFoundError,
                              ReadOnlyStoreError, StoreCorruptError)
from featstore.utils.atomic import atomic_open
from featstore.utils.keys import now_iso
from featstore.store import Root, location, open_store
from featstore.store.lease import hold_lease
from featstore.workflows.sharing.copy import read_local, refuse_links, select
from featstore.workflows.sharing.packcheck import (BLOCK, MANIFEST, PACK_VERSION, Member, PackPlan, SetPlan, check_pack,
                        open_zip)

__all__ = ["MANIFEST", "PACK_VERSION", "PackedSet", "pack", "unpack"]

log = logging.getLogger(__name__)

#: Chunks bigger than this are written to the zip as ZIP64 members.
_ZIP64_FROM = 1 << 31


@dataclass
class PackedSet:
    key: str
    name: str          # <key>.zarr or <key>.h5
    files: int
    bytes: int
    status: str = "packed"  # packed | unpacked | present

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pack -----------------------------------------------------------------------------
def pack(root: Any, out: str | Path, *, keys: tuple[str, ...] = (), backbone: str | None = None,
         dataset: str | None = None) -> list[PackedSet]:
    """Write the complete sets of ``root`` (or those selected) into the zip ``out``.

    A set holding a symbolic link is refused, before anything is written: a link's
    target is not part of the set, and following it could ship any file of this machine.
    """
    if location.is_url(out):
        raise FeatstoreError(f"pack writes a local zip file, not {out}. Pack to a local path, "
                             "then send it as you like (or `featstore copy` to share a root).")
    out = Path(out)
    if out.exists():
        raise AlreadyExistsError(f"{out} exists; choose another name or remove it first.")
    if not out.parent.is_dir():
        raise NotFoundError(f"The folder {out.parent} does not exist; create it first.")
    entries = [e for e in select(Root(root), keys=keys, backbone=backbone, dataset=dataset)
               if e.complete]
    if not entries:
        raise FeatstoreError(f"No complete feature sets in {root}"
                             + (" match the filters" if keys or backbone or dataset else "")
                             + f". See `featstore ls {root}`.")
    for e in entries:
        refuse_links(e.path, f"pack {e.key}")
    packed, manifest = [], {"format": "featstore-pack", "version": PACK_VERSION,
                            "created_at": now_iso(), "sets": [], "files": {}, "sizes": {}}
    try:
        with ExitStack() as stack:  # the zip appears under `out` only once it is whole
            try:  # a folder that refuses new files fails here, before any set is read
                sink = stack.enter_context(atomic_open(out, "wb"))
            except OSError as err:
                raise ReadOnlyStoreError(f"Cannot write {out}: {err.strerror}. Choose a place "
                                         "you can write to.") from err
            # Chunks are compressed already: store them (no second compression).
            zf = stack.enter_context(zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED))
            for e in entries:
                name, files, total = e.path.name, e.backend.files(e.path), 0
                for rel in sorted(files):
                    arc = f"{name}/{rel}" if rel else name
                    src = e.backend.member_path(e.path, rel)
                    digest, size = _add_member(zf, src, arc, files[rel])
                    manifest["files"][arc], manifest["sizes"][arc] = digest, size
                    total += size
                manifest["sets"].append({"key": e.key, "name": name, "format": e.format})
                packed.append(PackedSet(e.key, name, len(files), total))
            zf.writestr(_zip_info(MANIFEST), json.dumps(manifest, indent=2))
    except OSError as err:
        if isinstance(err, FeatstoreError):
            raise
        failed = location.write_error(err, out)
        raise (failed if failed is not err else FeatstoreError(
            f"Packing into {out} failed: {err.strerror or err} ({err.filename or out}). "
            "Nothing was written; check that file and rerun.")) from err
    return packed


def _zip_info(name: str) -> zipfile.ZipInfo:
    """A regular file (mode 0644) dated now: what other unzip tools extract sanely."""
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.external_attr = (stat.S_IFREG | 0o644) << 16
    return info


def _add_member(zf: zipfile.ZipFile, src: Any, arc: str, listed: int) -> tuple[str, int]:
    """Stream one file into the zip in bounded blocks; its (sha256, size)."""
    digest, size = hashlib.sha256(), 0
    reader = read_local(src) if not location.is_remote(src) else src.open("rb")
    with reader as f, zf.open(_zip_info(arc), "w", force_zip64=listed >= _ZIP64_FROM) as w:
        while block := f.read(BLOCK):
            digest.update(block)
            w.write(block)
            size += len(block)
    return digest.hexdigest(), size


# -- unpack ---------------------------------------------------------------------------
def unpack(pack_file: str | Path, root: Any, *, lease_seconds: float = 60.0) -> list[PackedSet]:
    """Unpack into ``root``; sets already complete there are left as they are.

    Refuses the whole pack, writing nothing, if any member or the manifest is unsafe or
    inconsistent (see :func:`.packcheck.check_pack`).
    """
    if location.is_url(pack_file):
        raise FeatstoreError(f"unpack reads a local zip file, not {pack_file}: download it first.")
    pack_file = Path(pack_file)
    if not pack_file.is_file():
        raise NotFoundError(f"No pack file at {pack_file}.")
    root_path = location.as_path(root)
    if location.is_remote(root_path):
        return _unpack_remote(pack_file, root_path, lease_seconds)
    with open_zip(pack_file) as zf:
        plan = check_pack(zf, pack_file)        # 1: nothing read beyond the manifest yet
        _check_free_space(root_path, plan)
        location.makedirs(root_path)
        return [_unpack_set(zf, plan, s, root_path, lease_seconds) for s in plan.sets]


def _unpack_remote(pack_file: Path, root: Any, lease_seconds: float) -> list[PackedSet]:
    """Object stores have no atomic folder rename: unpack locally, then copy (which writes
    each set's `complete` metadata last)."""
    import tempfile

    from featstore.workflows.sharing.copy import copy_root

    with tempfile.TemporaryDirectory(prefix="featstore-unpack-") as tmp:
        local = unpack(pack_file, tmp, lease_seconds=lease_seconds)
        copied = {r.key: r for r in copy_root(tmp, root, keys=tuple(s.key for s in local),
                                              progress=False, lease_seconds=lease_seconds)}
    return [PackedSet(s.key, s.name, s.files, s.bytes,
                      {"up to date": "present", "copied": "unpacked"}.get(
                          copied[s.key].status, copied[s.key].status))
            for s in local]


def _check_free_space(root: Path, plan: PackPlan) -> None:
    """Refuse a pack that cannot fit, rather than fill the disk and fail half-way."""
    where = root
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
    except OSError:
        return  # no answer (an odd file system): the writes themselves will tell
    if usage.total == 0:
        return  # a pseudo file system (sysfs, some FUSE mounts) reports no sizes at all
    free = usage.free
    need = sum(m.size for s in plan.sets for m in s.members)
    if need > free:
        raise DiskFullError(
            f"{plan.pack} unpacks to {need:,} bytes, but {where} has only {free:,} bytes "
            "free. Free some space or unpack into another root; nothing was written.")


def _complete_here(final: Path) -> bool:
    """Whether the root already holds this set, complete (a damaged one is replaced)."""
    try:
        with open_store(final):
            return True
    except Exception:  # absent, incomplete, or damaged: this unpack replaces it
        return False


def _unpack_set(zf: zipfile.ZipFile, plan: PackPlan, s: SetPlan, root: Path,
                lease_seconds: float) -> PackedSet:
    """Stage one set under its key's lease, check it, and move it into place."""
    final = root / s.name
    result = PackedSet(s.key, s.name, len(s.members), sum(m.size for m in s.members), "present")
    if _complete_here(final):
        return result
    # Renewed while we write (hold_lease): no one else takes the key meanwhile.
    with hold_lease(root, s.key, seconds=lease_seconds, what=str(final)) as lease:
        if _complete_here(final):
            return result  # finished by a writer while we waited
        _remove_stale_staging(root, s.key)
        staging = root / f".unpack-{s.key}-{uuid.uuid4().hex[:8]}"
        try:
            try:
                staging.mkdir()
                for m in s.members:
                    _write_member(zf, plan, m, staging)
                    lease.check()
            except OSError as err:
                raise _write_failed(err, root) from err
            _check_staged(staging / s.name, s, plan)
            lease.check()  # still ours: nobody else can be writing this key's final name
            if _complete_here(final):
                return result
            location.remove(final)  # an incomplete or damaged leftover of the same key
            try:
                os.rename(staging / s.name, final)
            except OSError as err:
                raise _write_failed(err, root) from err
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    result.status = "unpacked"
    return result


def _remove_stale_staging(root: Path, key: str) -> None:
    """Staging folders of this key left by an unpack that was killed: with the key's lease
    held, no live unpack of it can be writing one."""
    for stale in root.glob(f".unpack-{key}-*"):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)


def _write_failed(err: OSError, root: Path) -> OSError:
    """An OS error while writing the staged set, as one clear line (read-only, full)."""
    out = location.write_error(err, root)
    if out is err:
        return FeatstoreError(f"Cannot write into {root}: {err.strerror or err}. Nothing was "
                              "unpacked; check the folder and rerun.")  # type: ignore[return-value]
    return out


def _write_member(zf: zipfile.ZipFile, plan: PackPlan, m: Member, staging: Path) -> None:
    """Stream one member into ``staging`` in bounded blocks: never more bytes than its
    manifest says, and its sha256 checked before the set can be used."""
    target = staging.joinpath(*m.parts)
    # Last defence: the checked name cannot leave the staging folder, whatever it is.
    inside = os.path.realpath(staging)
    if os.path.commonpath([inside, os.path.realpath(target)]) != inside:
        raise StoreCorruptError(f"{plan.pack}: member {m.name!r} would be written outside "
                                f"{staging}; refusing the pack.")
    target.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    digest, n = hashlib.sha256(), 0
    with os.fdopen(os.open(target, flags, 0o644), "wb") as out, _member(zf, plan, m) as src:
        while block := _read(src, min(BLOCK, m.size - n + 1), plan, m):
            n += len(block)
            if n > m.size:
                raise StoreCorruptError(
                    f"{plan.pack}: {m.name} holds more than the {m.size:,} bytes its manifest "
                    "says; the pack is damaged or forged, ask for it again.")
            digest.update(block)
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    if n != m.size:
        raise StoreCorruptError(f"{plan.pack}: {m.name} holds {n:,} bytes, not the {m.size:,} "
                                "its manifest says; the pack is damaged, ask for it again.")
    if digest.hexdigest() != m.sha256:
        raise StoreCorruptError(f"{plan.pack}: {m.name} does not match its sha256; the pack is "
                                "damaged, ask for it again.")


#: What zipfile and its decompressors raise on a damaged member.
_READ_ERRORS: tuple[type[BaseException], ...] = (zipfile.BadZipFile, EOFError, ValueError,
                                                 NotImplementedError, RuntimeError)


def _damaged(plan: PackPlan, m: Member, err: BaseException) -> StoreCorruptError:
    return StoreCorruptError(f"{plan.pack} is damaged: reading {m.name!r} failed ({err}); ask "
                             "for it again. Nothing of it was kept.")


def _member(zf: zipfile.ZipFile, plan: PackPlan, m: Member) -> Any:
    try:
        return zf.open(m.info)
    except _READ_ERRORS as err:
        raise _damaged(plan, m, err) from err


def _read(src: Any, n: int, plan: PackPlan, m: Member) -> bytes:
    import zlib

    try:
        return src.read(n)
    except (*_READ_ERRORS, zlib.error, OSError) as err:
        raise _damaged(plan, m, err) from err


def _check_staged(path: Path, s: SetPlan, plan: PackPlan) -> None:
    """The staged set opens, holds the key it is named for, and passes its checksums.

    Its bytes are the sender's: anything the store reader raises on them is the pack's
    fault, reported as such rather than as a crash.
    """
    try:
        with open_store(path) as store:
            report = store.verify()
            stored_key = store.key
    except Exception as err:  # noqa: BLE001 - forged metadata can break any reader
        raise StoreCorruptError(
            f"{plan.pack}: {s.name} is not a readable feature set ({type(err).__name__}: "
            f"{str(err)[:200]}); the pack is damaged or was not made by featstore. Nothing "
            "was unpacked.") from err
    if stored_key != s.key:
        raise StoreCorruptError(f"{plan.pack}: {s.name} holds the set of key {stored_key}; "
                                "refusing to store it under another key's name.")
    if not report.ok:
        raise StoreCorruptError(f"{plan.pack}: {s.name} fails its chunk checksums "
                                f"({report.as_dict()}).")
