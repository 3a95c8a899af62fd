"""`featstore pack` / `unpack`: feature sets in one zip file, for sending by hand.

A pack holds ``<key>.zarr/...`` folders or ``<key>.h5`` files and a manifest,
``featstore-pack.json``, with every file's sha256. Unpacking refuses the whole file
before writing anything if a member has an absolute path, a ``..`` component, is a
link or names anything but a feature set; it then writes each set into a staging
folder in the root, checks the sha256s and the chunk checksums, and only then moves
the set to its final name, so a damaged pack never leaves a set that reads as
complete.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import time
import uuid
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import DataError, FeatstoreError, ReadOnlyStoreError, StoreCorruptError
from ..keys import now_iso
from ..store import Root, location, open_store
from ..store.lease import Lease
from .copy import _listing, select

MANIFEST = "featstore-pack.json"
PACK_VERSION = 1
_SET_NAME = re.compile(r"^[0-9a-f]{8,64}\.(zarr|h5)$")


@dataclass
class PackedSet:
    key: str
    name: str          # <key>.zarr or <key>.h5
    files: int
    bytes: int
    status: str = "packed"  # packed | unpacked | present

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pack(root: Any, out: str | Path, *, keys: tuple[str, ...] = (), backbone: str | None = None,
         dataset: str | None = None) -> list[PackedSet]:
    """Write the complete sets of ``root`` (or those selected) into the zip ``out``."""
    if location.is_url(out):
        raise FeatstoreError(f"pack writes a local zip file, not {out}. Pack to a local path, "
                             "then send it as you like (or `featstore copy` to share a root).")
    out = Path(out)
    if out.exists():
        raise FeatstoreError(f"{out} exists; choose another name or remove it first.")
    if not out.parent.is_dir():
        raise FeatstoreError(f"The folder {out.parent} does not exist; create it first.")
    entries = [e for e in select(Root(root), keys=keys, backbone=backbone, dataset=dataset)
               if e.complete]
    if not entries:
        raise FeatstoreError(f"No complete feature sets in {root}"
                             + (" match the filters" if keys or backbone or dataset else "")
                             + f". See `featstore ls {root}`.")
    partial = out.with_name(out.name + ".partial")
    try:
        partial.touch()
    except OSError as err:
        raise ReadOnlyStoreError(f"Cannot write {out}: {err.strerror}. Choose a place you can "
                                 "write to.") from err
    packed, manifest = [], {"format": "featstore-pack", "version": PACK_VERSION,
                            "created_at": now_iso(), "sets": [], "files": {}}
    try:
        # Chunks are compressed already: store them (no second compression).
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:
            for e in entries:
                name = e.path.name
                files = _listing(e.path)
                total = 0
                for rel in sorted(files):
                    data = location.join(e.path, rel).read_bytes() if rel else e.path.read_bytes()
                    arc = f"{name}/{rel}" if rel else name
                    zf.writestr(arc, data)
                    manifest["files"][arc] = hashlib.sha256(data).hexdigest()
                    total += len(data)
                manifest["sets"].append({"key": e.key, "name": name, "format": e.format})
                packed.append(PackedSet(e.key, name, len(files), total))
            zf.writestr(MANIFEST, json.dumps(manifest, indent=2))
        partial.replace(out)
    finally:
        if partial.exists():
            partial.unlink()
    return packed


def check_members(zf: zipfile.ZipFile) -> dict[str, Any]:
    """Refuse unsafe or foreign members; return the manifest."""
    for info in zf.infolist():
        name = info.filename
        path = PurePosixPath(name)
        mode = info.external_attr >> 16
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or "\\" in name:
            raise DataError(f"Refusing {zf.filename}: member {name!r} has an absolute path.")
        if ".." in path.parts:
            raise DataError(f"Refusing {zf.filename}: member {name!r} climbs out with '..'.")
        if stat.S_ISLNK(mode):
            raise DataError(f"Refusing {zf.filename}: member {name!r} is a symbolic link.")
        if name == MANIFEST or name.endswith("/") and info.file_size == 0:
            continue
        if not _SET_NAME.match(path.parts[0]):
            raise DataError(f"Refusing {zf.filename}: member {name!r} is not part of a feature "
                            "set (expected <key>.zarr/... or <key>.h5).")
    try:
        manifest = json.loads(zf.read(MANIFEST))
    except KeyError:
        raise DataError(f"{zf.filename} has no {MANIFEST}: it was not made by `featstore pack`."
                        ) from None
    if manifest.get("format") != "featstore-pack" or manifest.get("version", 0) > PACK_VERSION:
        raise DataError(f"{zf.filename}: unknown pack format/version {manifest.get('version')}; "
                        "upgrade featstore.")
    names = set()
    for s in manifest.get("sets", []):
        name, key, fmt = s.get("name", ""), s.get("key", ""), s.get("format")
        suffix = {"zarr": ".zarr", "hdf5": ".h5"}.get(fmt)
        if not _SET_NAME.fullmatch(name) or suffix is None or name != f"{key}{suffix}":
            raise DataError(f"Refusing {zf.filename}: its manifest names a set {name!r} "
                            f"(key {key!r}, format {fmt!r}); expected <key>.zarr or <key>.h5.")
        names.add(name)
    for i in zf.infolist():
        top = PurePosixPath(i.filename).parts[0]
        if i.filename != MANIFEST and top not in names:
            raise DataError(f"Refusing {zf.filename}: member {i.filename!r} belongs to no set "
                            "of its manifest.")
    listed = set(manifest.get("files", {}))
    present = {i.filename for i in zf.infolist()
               if i.filename != MANIFEST and not i.filename.endswith("/")}
    if listed != present:
        raise DataError(f"{zf.filename}: its members and its manifest disagree "
                        f"({len(present - listed)} unlisted, {len(listed - present)} missing).")
    return manifest


def unpack(pack_file: str | Path, root: Any) -> list[PackedSet]:
    """Unpack into ``root``; sets already complete there are left as they are."""
    if location.is_url(pack_file):
        raise FeatstoreError(f"unpack reads a local zip file, not {pack_file}: download it first.")
    pack_file = Path(pack_file)
    if not pack_file.is_file():
        raise FeatstoreError(f"No pack file at {pack_file}.")
    out: list[PackedSet] = []
    root_path = location.as_path(root)
    if location.is_remote(root_path):
        # Object stores have no atomic folder rename: unpack locally, then copy (which
        # writes each set's `complete` metadata last).
        import tempfile

        from .copy import copy_root

        with tempfile.TemporaryDirectory(prefix="featstore-unpack-") as tmp:
            local = unpack(pack_file, tmp)
            copied = {r.key: r for r in copy_root(tmp, root_path, keys=tuple(s.key for s in local),
                                                  progress=False)}
        return [PackedSet(s.key, s.name, s.files, s.bytes,
                          {"up to date": "present", "copied": "unpacked"}.get(
                              copied[s.key].status, copied[s.key].status))
                for s in local]
    try:
        zf = zipfile.ZipFile(pack_file)
    except zipfile.BadZipFile as err:
        raise DataError(f"{pack_file} is not a zip file ({err}).") from err
    with zf:
        manifest = check_members(zf)
        location.makedirs(root_path)
        for s in manifest["sets"]:
            name = s["name"]
            final = location.join(root_path, name)
            members = sorted(n for n in manifest["files"] if n == name or n.startswith(name + "/"))
            size = sum(zf.getinfo(n).file_size for n in members)
            try:
                with open_store(final):
                    out.append(PackedSet(s["key"], name, len(members), size, "present"))
                    continue
            except FeatstoreError:
                pass
            staging = location.join(root_path, f".unpack-{uuid.uuid4().hex[:8]}-{name}")
            # The key's lease: no extraction or copy of this key runs while we write it.
            lease = Lease(root_path, s["key"])
            while not lease.acquire():
                time.sleep(1.0)
            try:
                for n in members:
                    data = zf.read(n)
                    if hashlib.sha256(data).hexdigest() != manifest["files"][n]:
                        raise StoreCorruptError(f"{pack_file}: {n} does not match its sha256; "
                                                "the pack is damaged, ask for it again.")
                    rel = n[len(name) + 1:]
                    location.put_atomic(location.join(staging, rel) if rel else staging, data)
                with open_store(staging) as store:
                    report = store.verify()
                    stored_key = store.key
                if stored_key != s["key"]:
                    raise StoreCorruptError(f"{pack_file}: {name} holds the set of key "
                                            f"{stored_key}; refusing to store it under another "
                                            "key's name.")
                if not report.ok:
                    raise StoreCorruptError(f"{pack_file}: {name} fails its chunk checksums "
                                            f"({report.as_dict()}).")
                status = "unpacked"
                try:
                    with open_store(final):
                        status = "present"  # finished by a writer while we unpacked
                except FeatstoreError:
                    location.remove(final)  # an incomplete leftover of the same key
                    fs, p = location.fs_and_path(staging)
                    fs.mv(p, location.fs_and_path(final)[1], recursive=True)
            finally:
                location.remove(staging)
                lease.release(remove=True)
            out.append(PackedSet(s["key"], name, len(members), size, status))
    return out
