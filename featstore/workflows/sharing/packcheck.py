"""What `featstore unpack` checks of a pack before it writes a single byte.

A pack comes from someone else: its member names, types, sizes and manifest are all
the sender's, and none is trusted. :func:`check_pack` refuses the whole pack unless

* every member name is a plain relative path inside one feature set: no absolute path
  (``/x``, ``KEY.zarr//x``, ``C:/x``), no ``.``/``..``/empty component, no backslash, no
  control or non-ASCII character (so no look-alike dots or slashes), not too deep;
* every member is a regular file (no link, device or FIFO), not encrypted, compressed
  (if at all) with a method zipfile reads, and no name repeats, even up to letter case;
* the manifest is a bounded JSON object naming each set as ``<key>.zarr`` / ``<key>.h5``
  and listing exactly the members present, each with its sha256 and size;
* each member's size in the zip's directory equals its manifest size (packs of older
  featstore, without sizes, are bounded by that directory size), and no member expands
  by an absurd ratio (a zip bomb);

and returns the plan :mod:`.pack` then streams, never past a member's size.
"""

from __future__ import annotations

import re
import stat
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from featstore.errors import DataError, FeatstoreError
from featstore.store import BACKENDS, FeatureStore

MANIFEST = "featstore-pack.json"
PACK_VERSION = 1
BLOCK = 1 << 20                 # bytes read and written at a time
MAX_MEMBERS = 1_000_000         # members a pack may hold
MAX_MANIFEST = 64 << 20         # bytes the manifest may take (1M files need ~200 MB: none do)
MAX_RATIO = 100                 # expansion a member over RATIO_FROM may have: packs are stored,
RATIO_FROM = 1 << 20            # chunks compressed already, so any big ratio is a bomb
MAX_DEPTH = 8                   # components of a member name (KEY.zarr/features/c/0/0/0 is 6)
MAX_NAME = 1024

#: A set's name in a pack: a key and the suffix of a backend (``KEY.zarr``, ``KEY.h5``).
SET_NAME = re.compile(r"[0-9a-f]{8,64}(" + "|".join(re.escape(b.suffix) for b in BACKENDS)
                      + ")")
_PART = re.compile(r"[A-Za-z0-9._-]+")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)
_SUFFIX = {b.format: b.suffix for b in BACKENDS}
#: What the manifest and the errors say a set's name is.
_EXPECTED = " or ".join(f"<key>{b.suffix}" for b in BACKENDS)


@dataclass(frozen=True)
class Member:
    """One file of a set, as checked: write it to ``parts`` (its set's name first)."""

    info: zipfile.ZipInfo
    name: str
    parts: tuple[str, ...]
    sha256: str
    size: int           # exactly this many bytes, or the pack is refused


@dataclass
class SetPlan:
    key: str
    name: str           # <key>.zarr or <key>.h5
    format: str
    members: list[Member] = field(default_factory=list)


@dataclass
class PackPlan:
    pack: Path
    sets: list[SetPlan]


def _show(value: Any) -> str:
    """A name from the pack, safe to print: escaped, and cut if long."""
    text = ascii(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _refuse(pack: Path, problem: str, fix: str = "") -> NoReturn:
    raise DataError(f"Refusing {pack}: {problem}. Nothing was written; "
                    + (fix or "ask its sender for a new pack made by `featstore pack`."))


def unsafe_name(name: str) -> str | None:
    """Why ``name`` (a member's name, without a folder entry's final '/') is not a plain
    relative path that stays where it is put; None if it is one."""
    if not name:
        return "has an empty name"
    if len(name) > MAX_NAME:
        return f"has a name longer than {MAX_NAME} characters"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return "has control characters in its name"
    if "\\" in name:
        return "has a backslash (a Windows path separator)"
    if name.startswith("/"):
        return "has an absolute path"
    if re.match(r"[A-Za-z]:", name):
        return "starts with a drive letter (a Windows absolute path)"
    parts = name.split("/")
    if any(p in (".", "..") for p in parts):
        return "has a '.' or '..' component (it could climb out of the root)"
    if "" in parts:
        return "has an empty component ('//': an absolute path after a folder)"
    if len(parts) > MAX_DEPTH:
        return f"is nested deeper than {MAX_DEPTH} folders"
    for p in parts:
        if len(p) > 255:
            return "has a component longer than 255 characters"
        if not _PART.fullmatch(p):
            return (f"has a component {_show(p)} with characters other than ASCII letters, "
                    "digits, '.', '_' and '-'")
    return None


def open_zip(pack: Path) -> zipfile.ZipFile:
    """The pack as a zip, refusing a non-zip or one with too many members to list."""
    try:
        with pack.open("rb") as f:
            end = zipfile._EndRecData(f)  # the directory's own count, before it is read
        if end and end[zipfile._ECD_ENTRIES_TOTAL] > MAX_MEMBERS:
            _refuse(pack, f"it has {end[zipfile._ECD_ENTRIES_TOTAL]:,} members, more than the "
                    f"{MAX_MEMBERS:,} a pack may hold")
        return zipfile.ZipFile(pack)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError,
            NotImplementedError) as err:
        if isinstance(err, FeatstoreError):
            raise
        _refuse(pack, f"it is not a zip file, or a damaged one ({err})",
                "ask for it again (a download may have been cut short).")
    except AttributeError:  # a zipfile without the private helper: count after opening
        return zipfile.ZipFile(pack)
    except OSError as err:
        raise FeatstoreError(f"Cannot read {pack}: {err.strerror or err}.") from err


def _check_entry(pack: Path, info: zipfile.ZipInfo) -> None:
    """A plain, readable member: not encrypted, a known method, a regular file or folder."""
    what = f"member {_show(info.filename)}"
    if info.flag_bits & 0x1:
        _refuse(pack, f"{what} is encrypted (featstore packs never are)")
    if info.compress_type not in _METHODS:
        _refuse(pack, f"{what} uses compression method {info.compress_type}, which unpack "
                "does not read (it reads stored, deflate, bzip2 and lzma members)")
    kind = stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        _refuse(pack, f"{what} is a symbolic link")
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR) or (kind == stat.S_IFDIR
                                                      and not info.is_dir()):
        _refuse(pack, f"{what} is a special file (a device, FIFO or socket), not a regular "
                "file")


def _backend(name: str) -> type[FeatureStore] | None:
    """The backend of a set named ``name`` in a pack (None if it names no set)."""
    if not SET_NAME.fullmatch(name):
        return None
    return next(b for b in BACKENDS if name.endswith(b.suffix))


def _member_parts(pack: Path, info: zipfile.ZipInfo) -> tuple[str, ...]:
    """The checked components of a member's name, its set's folder or file first."""
    name = info.filename[:-1] if info.is_dir() else info.filename
    why = unsafe_name(name)
    if why:
        _refuse(pack, f"member {_show(info.filename)} {why}")
    parts = tuple(name.split("/"))
    backend = _backend(parts[0])
    if backend is None or (not backend.single_file and len(parts) == 1
                           and not info.is_dir()):
        expected = " or ".join(f"<key>{b.suffix}" + ("" if b.single_file else "/...")
                               for b in BACKENDS)
        _refuse(pack, f"member {_show(info.filename)} is not part of a feature set (expected "
                f"{expected})")
    if backend.single_file and (len(parts) > 1 or info.is_dir()):
        _refuse(pack, f"member {_show(info.filename)} is inside {parts[0]}, but a "
                f"{backend.suffix} set is one file")
    if info.is_dir() and info.file_size:
        _refuse(pack, f"member {_show(info.filename)} is a folder entry holding data")
    return parts


def _read_manifest(zf: zipfile.ZipFile, pack: Path, info: zipfile.ZipInfo) -> dict[str, Any]:
    """The manifest, read within its bound, as a JSON object of a version we read."""
    if info.file_size > MAX_MANIFEST:
        _refuse(pack, f"its {MANIFEST} is {info.file_size:,} bytes, more than the "
                f"{MAX_MANIFEST:,} a manifest may take")
    try:
        with zf.open(info) as f:
            raw = f.read(MAX_MANIFEST + 1)
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, RuntimeError) as err:
        _refuse(pack, f"its {MANIFEST} cannot be read ({err}); the pack is damaged",
                "ask for it again.")
    if len(raw) > MAX_MANIFEST:
        _refuse(pack, f"its {MANIFEST} is more than the {MAX_MANIFEST:,} bytes a manifest "
                "may take")
    import json

    try:
        man = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        _refuse(pack, f"its {MANIFEST} is not JSON ({str(err)[:100]})")
    if not isinstance(man, dict):
        _refuse(pack, f"its {MANIFEST} is not a JSON object")
    if man.get("format") != "featstore-pack":
        _refuse(pack, f"its {MANIFEST} is not a featstore pack's manifest (format "
                f"{_show(man.get('format'))})")
    version = man.get("version")
    if type(version) is not int or version < 1:
        _refuse(pack, f"its manifest has version {_show(version)}; expected a whole number")
    if version > PACK_VERSION:
        _refuse(pack, f"it is a pack of version {version}, newer than this featstore reads "
                f"({PACK_VERSION})", "upgrade featstore (pip install -U featstore) to unpack it.")
    return man


def _manifest_sets(pack: Path, man: dict[str, Any]) -> dict[str, SetPlan]:
    sets = man.get("sets")
    if not isinstance(sets, list) or not all(isinstance(s, dict) for s in sets):
        _refuse(pack, "its manifest's 'sets' is not a list of sets")
    if not sets:
        _refuse(pack, "it holds no feature set")
    out: dict[str, SetPlan] = {}
    for s in sets:
        name, key, fmt = s.get("name"), s.get("key"), s.get("format")
        suffix = _SUFFIX.get(fmt) if isinstance(fmt, str) else None
        if not (isinstance(name, str) and isinstance(key, str) and suffix
                and SET_NAME.fullmatch(name) and name == key + suffix):
            _refuse(pack, f"its manifest names a set {_show(name)} (key {_show(key)}, format "
                    f"{_show(fmt)}); expected {_EXPECTED}")
        if name in out:
            _refuse(pack, f"its manifest lists the set {name} twice")
        out[name] = SetPlan(key, name, fmt)
    return out


def _manifest_files(pack: Path, man: dict[str, Any]
                    ) -> tuple[dict[str, str], dict[str, int] | None]:
    files = man.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) and _SHA256.fullmatch(v)
                                              for v in files.values()):
        _refuse(pack, "its manifest's 'files' must map each member to its sha256 (64 hex "
                "digits)")
    sizes = man.get("sizes")  # absent from packs of featstore before 'sizes' was recorded
    if sizes is not None and not (
            isinstance(sizes, dict) and set(sizes) == set(files)
            and all(type(v) is int and 0 <= v < 1 << 63 for v in sizes.values())):
        _refuse(pack, "its manifest's 'sizes' must give the size in bytes of every member its "
                "'files' lists")
    return files, sizes


def _check_sizes(pack: Path, info: zipfile.ZipInfo, size: int | None) -> int:
    """The size a member must stream to: its manifest's, which the zip must agree with."""
    what = f"member {_show(info.filename)}"
    if size is not None and info.file_size != size:
        _refuse(pack, f"{what} is {info.file_size:,} bytes by the zip's directory, but its "
                f"manifest says {size:,}")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        _refuse(pack, f"{what} is stored uncompressed, yet its zip sizes disagree "
                f"({info.compress_size:,} and {info.file_size:,} bytes)")
    if info.file_size > RATIO_FROM and info.file_size > MAX_RATIO * max(info.compress_size, 1):
        _refuse(pack, f"{what} expands {info.file_size / max(info.compress_size, 1):,.0f}:1 "
                f"({info.file_size:,} bytes from {info.compress_size:,}): a compression ratio "
                "no feature set has (its chunks are compressed already), but a zip bomb has")
    return info.file_size


def check_pack(zf: zipfile.ZipFile, pack: Path) -> PackPlan:
    """Check every member and the manifest, reading nothing but the manifest; the plan."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        _refuse(pack, f"it has {len(infos):,} members, more than the {MAX_MEMBERS:,} a pack "
                "may hold")
    files: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    tops: set[str] = set()
    manifests, seen, folded = [], set(), {}
    for info in infos:
        name = info.filename
        _check_entry(pack, info)
        if name in seen:
            _refuse(pack, f"member {_show(name)} appears twice (duplicate names)")
        if name.lower() in folded:
            _refuse(pack, f"member {_show(name)} differs from member {_show(folded[name.lower()])} "
                    "only by letter case (they would collide on macOS and Windows)")
        seen.add(name)
        folded[name.lower()] = name
        if name == MANIFEST:
            manifests.append(info)
            continue
        parts = _member_parts(pack, info)
        tops.add(parts[0])
        if not info.is_dir():
            files.append((info, parts))
    if not manifests:
        _refuse(pack, f"it has no {MANIFEST}: it was not made by `featstore pack`")
    man = _read_manifest(zf, pack, manifests[0])
    sets = _manifest_sets(pack, man)
    shas, sizes = _manifest_files(pack, man)
    for top in sorted(tops - set(sets)):
        _refuse(pack, f"its members under {_show(top)} belong to no set of its manifest")
    present = {info.filename for info, _ in files}
    unlisted, missing = sorted(present - set(shas)), sorted(set(shas) - present)
    if unlisted or missing:
        _refuse(pack, f"its members and its manifest disagree ({len(unlisted)} unlisted"
                + (f", e.g. {_show(unlisted[0])}" if unlisted else "")
                + f"; {len(missing)} missing" + (f", e.g. {_show(missing[0])}" if missing else "")
                + ")")
    folders = {parts[:i] for _, parts in files for i in range(1, len(parts))}
    for info, parts in sorted(files, key=lambda f: f[0].filename):
        if parts in folders:
            _refuse(pack, f"member {_show(info.filename)} is both a file and a folder")
        size = _check_sizes(pack, info, None if sizes is None else sizes[info.filename])
        sets[parts[0]].members.append(
            Member(info, info.filename, parts, shas[info.filename], size))
    for s in sets.values():
        if not s.members:
            _refuse(pack, f"its manifest lists the set {s.name}, but the pack holds none of "
                    "its files")
    return PackPlan(pack, list(sets.values()))
