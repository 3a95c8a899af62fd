"""Hostile packs and store folders against `featstore unpack`, `pack` and `copy` (issue 10).

Every bad input goes through the CLI (click's CliRunner, in-process) and must end in
one `Error:` line, a non-zero exit, no traceback, and a tree byte-for-byte as it was:
the destination root and the folder beside it that hostile members aim at. One tiny
store and one genuine pack are built once per module; each case tampers with a copy.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import shutil
import stat
import threading
import time
import tracemalloc
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from click.testing import CliRunner

from featstore.store import Root
from featstore_cli.main import cli
from helpers import (assert_unchanged, assert_user_error, make_images, snapshot,
                     tiny_extract_args)

MANIFEST = "featstore-pack.json"
MiB = 1 << 20
BOMB = 256 * MiB  # what the crafted bombs expand to (each is about 250 KB)


@dataclass
class Made:
    root: Path   # a root holding one complete Zarr set
    pack: Path   # a genuine pack of it
    key: str


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Made:
    base = tmp_path_factory.mktemp("made")
    images, labels = make_images(40)
    np.savez(base / "tiny.npz", x=images, y=labels)
    runner = CliRunner()
    res = runner.invoke(cli, tiny_extract_args(base / "tiny.npz", base / "root"))
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["pack", str(base / "root"), str(base / "good.zip")])
    assert res.exit_code == 0, res.output
    return Made(base / "root", base / "good.zip", Root(base / "root").entries()[0].key)


@pytest.fixture
def area(tmp_path) -> dict[str, Path]:
    """A destination root holding a file of its own, and a folder beside it with a victim."""
    dst, outside = tmp_path / "dst", tmp_path / "outside"
    dst.mkdir()
    outside.mkdir()
    (dst / "keep.txt").write_text("the root's own file")
    (outside / "victim.txt").write_text("must never be overwritten")
    return {"dst": dst, "outside": outside, "tmp": tmp_path}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Draft:
    """A pack being tampered with: its members in order, and its manifest."""

    def __init__(self, good: Path, key: str, outside: Path):
        self.key, self.outside = key, outside
        with zipfile.ZipFile(good) as zf:
            self.manifest = json.loads(zf.read(MANIFEST))
            self.members = [(i, zf.read(i)) for i in zf.infolist() if i.filename != MANIFEST]
        self.manifest_bytes: bytes | None = None
        self.manifest_compress = zipfile.ZIP_STORED
        self.extra_manifests = 0
        self.patches: list[Callable[[Path], None]] = []

    @property
    def set(self) -> str:
        return f"{self.key}.zarr"

    def name(self, rel: str) -> str:
        return f"{self.set}/{rel}"

    def data(self, name: str) -> bytes:
        return next(d for i, d in self.members if i.filename == name)

    def listed(self, name: str, data: bytes) -> None:
        """Record ``name`` in the manifest with its true sha256 (and size, if it has sizes)."""
        self.manifest["files"][name] = sha(data)
        if "sizes" in self.manifest:
            self.manifest["sizes"][name] = len(data)

    def add(self, name: str, data: bytes = b"evil bytes", *, mode: int | None = None,
            listed: bool = True) -> None:
        info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
        if mode is not None:
            info.external_attr = mode << 16
        self.members.append((info, data))
        if listed:
            self.listed(name, data)

    def replace(self, name: str, data: bytes, *, relist: bool = True,
                mode: int | None = None) -> None:
        i = next(n for n, (info, _) in enumerate(self.members) if info.filename == name)
        info = self.members[i][0]
        if mode is not None:
            info.external_attr = mode << 16
        self.members[i] = (info, data)
        if relist:
            self.listed(name, data)

    def drop(self, name: str) -> None:
        self.members = [(i, d) for i, d in self.members if i.filename != name]

    def write(self, path: Path) -> Path:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about duplicate names
            with zipfile.ZipFile(path, "w") as zf:
                for info, data in self.members:
                    zf.writestr(info, data)
                body = self.manifest_bytes
                if body is None:
                    body = json.dumps(self.manifest).encode()
                for _ in range(1 + self.extra_manifests):
                    zf.writestr(MANIFEST, body, compress_type=self.manifest_compress)
        for patch in self.patches:
            patch(path)
        return path


# -- raw patches of a written zip: what zipfile will not write -------------------------
def _patch_headers(path: Path, name: str, edit: Callable[[bytearray, int, int], None]) -> None:
    """Call ``edit(raw, local_header_offset, central_entry_offset)`` for member ``name``."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    i = raw.find(b"PK\x01\x02")
    while i >= 0:
        n = int.from_bytes(raw[i + 28:i + 30], "little")
        if raw[i + 46:i + 46 + n] == name.encode():
            break
        i = raw.find(b"PK\x01\x02", i + 4)
    edit(raw, local, i)
    path.write_bytes(bytes(raw))


def set_flag(name: str, flag: int) -> Callable[[Path], None]:
    def edit(raw: bytearray, local: int, central: int) -> None:
        for at in (local + 6, central + 8):
            raw[at:at + 2] = (int.from_bytes(raw[at:at + 2], "little") | flag).to_bytes(2, "little")
    return lambda path: _patch_headers(path, name, edit)


def set_method(name: str, method: int) -> Callable[[Path], None]:
    def edit(raw: bytearray, local: int, central: int) -> None:
        for at in (local + 8, central + 10):
            raw[at:at + 2] = method.to_bytes(2, "little")
    return lambda path: _patch_headers(path, name, edit)


def rename_raw(name: str, new: str) -> Callable[[Path], None]:
    """Rename a member byte for byte (same length): in the local header only, or everywhere
    (``new`` may then hold bytes zipfile would never write, such as NUL)."""
    assert len(new) == len(name)

    def edit(raw: bytearray, local: int, central: int) -> None:
        raw[local + 30:local + 30 + len(name)] = new.encode("latin-1")
    return lambda path: _patch_headers(path, name, edit)


def flip_stored_byte(name: str) -> Callable[[Path], None]:
    """Flip the last byte of a stored member's data (its CRC and sha256 no longer match)."""
    def edit(raw: bytearray, local: int, central: int) -> None:
        n, extra = (int.from_bytes(raw[local + at:local + at + 2], "little") for at in (26, 28))
        size = int.from_bytes(raw[local + 18:local + 22], "little")
        raw[local + 30 + n + extra + size - 1] ^= 0xFF
    return lambda path: _patch_headers(path, name, edit)


# -- the bad packs: (id, tamper, words the one Error line must hold) -------------------
CHUNK = "features/c/0/0"
LABELS = "labels/c/0"


def _h5_with_children(d: Draft) -> None:
    other = "0123456789abcdef01234567"
    d.manifest["sets"].append({"key": other, "name": f"{other}.h5", "format": "hdf5"})
    d.add(f"{other}.h5/features")


def _raw(data: bytes) -> Callable[[Draft], bytes]:
    return lambda d: data


def _good_bytes(cut: Callable[[bytes], bytes]) -> Callable[[Draft], bytes]:
    def make(d: Draft) -> bytes:
        path = d.outside.parent / "whole.zip"
        data = cut(d.write(path).read_bytes())
        path.unlink()
        return data
    return make


def _set_manifest(**changes: Any) -> Callable[[Draft], None]:
    return lambda d: d.manifest.update(changes)


def _set_field(which: str, member: str, value: Any) -> Callable[[Draft], None]:
    return lambda d: d.manifest[which].__setitem__(d.name(member), value)


def _set0(field: str, value: Any) -> Callable[[Draft], None]:
    return lambda d: d.manifest["sets"][0].__setitem__(field, value)


BAD_PACKS: list[tuple[str, Callable[[Draft], Any], tuple[str, ...]]] = [
    # traversal, in every form
    ("dotdot-top", lambda d: d.add("../x"), ("'..'",)),
    ("dotdot-in-set", lambda d: d.add(d.name("../../x")), ("'..'",)),
    ("dotdot-after-folder", lambda d: d.add(d.name("a/../../x")), ("'..'",)),
    ("dotdot-onto-metadata", lambda d: d.add(d.name("a/../zarr.json")), ("'..'",)),
    ("dotdot-alone", lambda d: d.add(d.name("..")), ("'..'",)),
    ("dot", lambda d: d.add(d.name("./x")), ("'.'",)),
    ("dot-before-set", lambda d: d.add("./" + d.name("x")), ("'.'",)),
    ("absolute", lambda d: d.add(str(d.outside / "abs.txt")), ("absolute",)),
    ("absolute-after-set-overwrites", lambda d: d.add(d.set + "/" + str(d.outside / "victim.txt")),
     ("absolute",)),
    ("absolute-after-set-new", lambda d: d.add(d.set + "/" + str(d.outside / "new.txt")),
     ("absolute",)),
    ("empty-component", lambda d: d.add(d.name("features//c/9/0")), ("empty component",)),
    ("drive-backslash", lambda d: d.add("C:\\x"), ("backslash",)),
    ("drive-slash", lambda d: d.add("C:/x"), ("drive letter",)),
    ("backslash-dotdot", lambda d: d.add(d.set + "\\..\\x"), ("backslash",)),
    ("colon-stream", lambda d: d.add(d.name(CHUNK + ":evil")), ("characters other than",)),
    ("fullwidth-dots", lambda d: d.add(d.name("\uff0e\uff0e/x")), ("characters other than",)),
    ("division-slash", lambda d: d.add(d.name("a\u2215..\u2215x")), ("characters other than",)),
    ("control-char", lambda d: d.add(d.name("a\x1b[2Jb")), ("control characters",)),
    ("component-too-long", lambda d: d.add(d.name("a" * 300)), ("longer than 255",)),
    ("too-deep", lambda d: d.add(d.name("d/" * 40 + "x")), ("deeper",)),
    ("nul-byte", lambda d: (d.add(d.name("labels/c/0Z../../x")),
                            d.patches.append(_nul_everywhere(d.name("labels/c/0Z../../x")))),
     ("twice",)),
    # links and special files
    ("symlink-member", lambda d: d.add(d.name("link"), str(d.outside / "victim.txt").encode(),
                                       mode=stat.S_IFLNK | 0o777), ("symbolic link",)),
    ("symlink-as-chunk", lambda d: d.replace(d.name(CHUNK), b"/etc/passwd",
                                             mode=stat.S_IFLNK | 0o777), ("symbolic link",)),
    ("char-device", lambda d: d.add(d.name("dev"), mode=stat.S_IFCHR | 0o644), ("special file",)),
    ("fifo", lambda d: d.add(d.name("fifo"), mode=stat.S_IFIFO | 0o644), ("special file",)),
    ("folder-entry-with-data", lambda d: d.add(d.name("features/")), ("folder entry",)),
    ("set-name-as-file", lambda d: d.add(d.set), ("not part of a feature set",)),
    # members that belong to no set
    ("top-level-file", lambda d: d.add("notes.txt"), ("not part of a feature set",)),
    ("planted-lease", lambda d: d.add(".leases/x/00000001.json"), ("not part of a feature set",)),
    ("staging-name", lambda d: d.add(".unpack-1234-x.zarr/zarr.json"),
     ("not part of a feature set",)),
    ("unknown-set", lambda d: d.add("0123456789abcdef.zarr/zarr.json"),
     ("no set of its manifest",)),
    ("h5-set-with-children", _h5_with_children, ("one file",)),
    # the manifest lies
    ("sha-wrong", _set_field("files", CHUNK, "0" * 64), ("sha256",)),
    ("labels-altered", lambda d: d.replace(d.name(LABELS), b"\x00" * len(d.data(d.name(LABELS))),
                                           relist=False), ("sha256",)),
    ("size-smaller", lambda d: d.manifest["sizes"].__setitem__(
        d.name(CHUNK), d.manifest["sizes"][d.name(CHUNK)] - 1), ("manifest says",)),
    ("size-larger", lambda d: d.manifest["sizes"].__setitem__(
        d.name(CHUNK), d.manifest["sizes"][d.name(CHUNK)] + 1), ("manifest says",)),
    ("size-negative", _set_field("sizes", CHUNK, -1), ("sizes",)),
    ("size-not-a-number", _set_field("sizes", CHUNK, "3375"), ("sizes",)),
    ("size-missing-for-a-file", lambda d: d.manifest["sizes"].pop(d.name(CHUNK)), ("sizes",)),
    ("sha-not-a-string", _set_field("files", CHUNK, 123), ("sha256",)),
    ("extra-member-unlisted", lambda d: d.add(d.name("features/c/9/0"), listed=False),
     ("disagree", "unlisted")),
    ("listed-member-missing", lambda d: d.drop(d.name(LABELS)), ("disagree", "missing")),
    ("manifest-not-json", lambda d: setattr(d, "manifest_bytes", b"{not json"), ("json",)),
    ("manifest-not-utf8", lambda d: setattr(d, "manifest_bytes", b"\xff\xfe{}"), ("json",)),
    ("manifest-a-list", lambda d: setattr(d, "manifest_bytes", b"[]"), ("json object",)),
    ("manifest-deeply-nested", lambda d: setattr(d, "manifest_bytes", b"[" * 100_000),
     ("json",)),
    ("manifest-huge", lambda d: (setattr(d, "manifest_bytes", json.dumps(d.manifest).encode()
                                         + b" " * (70 * MiB)),
                                 setattr(d, "manifest_compress", zipfile.ZIP_DEFLATED)),
     ("more than",)),
    ("manifest-missing", lambda d: setattr(d, "extra_manifests", -1), (MANIFEST,)),
    ("manifest-twice", lambda d: setattr(d, "extra_manifests", 1), ("twice",)),
    ("manifest-version-newer", _set_manifest(version=99), ("version",)),
    ("manifest-version-string", _set_manifest(version="1"), ("version",)),
    ("manifest-format-wrong", _set_manifest(format="zip"), ("format",)),
    ("manifest-files-a-list", _set_manifest(files=[]), ("'files'",)),
    ("manifest-sets-not-a-list", _set_manifest(sets={"a": 1}), ("'sets'",)),
    ("manifest-holds-no-set", lambda d: (d.manifest.update(sets=[], files={}, sizes={}),
                                         setattr(d, "members", [])), ("no feature set",)),
    ("set-key-mismatch", _set0("key", "0" * 24), ("expected <key>.zarr",)),
    ("set-name-traversal", _set0("name", "../x.zarr"), ("expected <key>.zarr",)),
    ("set-format-wrong", _set0("format", "hdf5"), ("expected <key>.zarr",)),
    ("set-listed-twice", lambda d: d.manifest["sets"].append(dict(d.manifest["sets"][0])),
     ("twice",)),
    # duplicate names
    ("duplicate-member", lambda d: d.add(d.name(LABELS), b"\x00" * 16), ("twice",)),
    ("names-differ-by-case", lambda d: d.add(d.name("ZARR.json"), d.data(d.name("zarr.json"))),
     ("letter case",)),
    # the container itself
    ("not-a-zip", _raw(b"hello, this is not a zip file\n"), ("not a zip",)),
    ("empty-file", _raw(b""), ("not a zip",)),
    ("truncated-half", _good_bytes(lambda b: b[:len(b) // 2]), ("not a zip",)),
    ("truncated-tail", _good_bytes(lambda b: b[:-10]), ("not a zip",)),
    ("empty-zip", lambda d: (d.members.clear(), setattr(d, "extra_manifests", -1)), (MANIFEST,)),
    ("encrypted-member", lambda d: d.patches.append(set_flag(d.name(CHUNK), 0x1)),
     ("encrypted",)),
    ("unknown-compression", lambda d: d.patches.append(set_method(d.name(CHUNK), 99)),
     ("compression",)),
    ("bad-crc", lambda d: d.patches.append(flip_stored_byte(d.name("zarr.json"))), ("damaged",)),
    ("header-name-differs", lambda d: d.patches.append(
        rename_raw(d.name(LABELS), d.name(LABELS).replace("labels", "lab/ls"))), ("damaged",)),
    # forged content that matches its manifest, but is no feature set
    ("metadata-a-list", lambda d: d.replace(d.name("zarr.json"), b"[]"), ("feature set",)),
    ("array-metadata-garbage", lambda d: d.replace(d.name("features/zarr.json"), b"{\"x\": 1}"),
     ("feature set",)),
]


def _nul_everywhere(name: str) -> Callable[[Path], None]:
    """Turn the 'Z' of ``name`` into NUL in both headers (zipfile truncates names there)."""
    new = name.replace("Z", "\x00")

    def edit(raw: bytearray, local: int, central: int) -> None:
        for at in (local + 30, central + 46):
            raw[at:at + len(name)] = new.encode("latin-1")
    return lambda path: _patch_headers(path, name, edit)


def _build(made: Made, area: dict[str, Path], tamper: Callable[[Draft], Any]) -> Path:
    draft = Draft(made.pack, made.key, area["outside"])
    raw = tamper(draft)
    bad = area["tmp"] / "bad.zip"
    if isinstance(raw, bytes):
        bad.write_bytes(raw)
        return bad
    draft.write(bad)
    return bad


@pytest.mark.parametrize("tamper,needles", [(t, n) for _, t, n in BAD_PACKS],
                         ids=[i for i, _, _ in BAD_PACKS])
def test_unpack_refuses_a_bad_pack_and_changes_nothing(made, area, runner, tamper, needles):
    bad = _build(made, area, tamper)
    before = snapshot(area["tmp"])
    res = runner.invoke(cli, ["unpack", str(bad), str(area["dst"])])
    assert_user_error(res, *needles)
    assert_unchanged(before, snapshot(area["tmp"]))


def test_a_refused_pack_does_not_create_the_root(made, area, runner):
    bad = _build(made, area, lambda d: d.add(d.set + "/" + str(d.outside / "x")))
    res = runner.invoke(cli, ["unpack", str(bad), str(area["tmp"] / "new-root")])
    assert_user_error(res, "absolute")
    assert not (area["tmp"] / "new-root").exists()


def test_too_many_members_are_refused(made, area, runner, monkeypatch):
    monkeypatch.setattr(importlib.import_module("featstore.workflows.sharing.packcheck"), "MAX_MEMBERS",
                        10)  # the genuine pack has 15
    before = snapshot(area["tmp"])
    assert_user_error(runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])]),
                      "members")
    assert_unchanged(before, snapshot(area["tmp"]))


# -- zip bombs: refused before they are expanded, in bounded memory --------------------
@pytest.fixture(scope="module")
def bomb_base(made, tmp_path_factory) -> tuple[Path, str]:
    """The genuine members, with the features chunk replaced by 256 MiB of deflated zeros
    (no manifest yet); and the sha256 of those zeros."""
    path = tmp_path_factory.mktemp("bomb") / "base.zip"
    chunk = f"{made.key}.zarr/{CHUNK}"
    zeros, digest = bytes(MiB), hashlib.sha256()
    with zipfile.ZipFile(made.pack) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            if info.filename not in (MANIFEST, chunk):
                zout.writestr(info, zin.read(info))
        bomb = zipfile.ZipInfo(chunk, date_time=(2020, 1, 1, 0, 0, 0))
        bomb.compress_type = zipfile.ZIP_DEFLATED
        with zout.open(bomb, "w", force_zip64=True) as w:
            for _ in range(BOMB // MiB):
                w.write(zeros)
                digest.update(zeros)
    return path, digest.hexdigest()


@pytest.mark.parametrize("sizes", ["as-before", "honest", "none"])
def test_a_zip_bomb_is_refused_before_it_expands(made, bomb_base, area, runner, sizes):
    """The manifest gives the zeros' true sha256 (so only sizes can stop them) and says the
    member is as small as before, says its true size, or (an old pack) says nothing."""
    base, zeros_sha = bomb_base
    with zipfile.ZipFile(made.pack) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    chunk = f"{made.key}.zarr/{CHUNK}"
    manifest["files"][chunk] = zeros_sha
    if sizes == "honest":
        manifest["sizes"][chunk] = BOMB
    elif sizes == "none":
        del manifest["sizes"]
    bad = area["tmp"] / "bomb.zip"
    shutil.copyfile(base, bad)
    with zipfile.ZipFile(bad, "a") as zf:
        zf.writestr(MANIFEST, json.dumps(manifest))
    assert bad.stat().st_size < MiB
    before = snapshot(area["tmp"])
    tracemalloc.start()
    try:
        res = runner.invoke(cli, ["unpack", str(bad), str(area["dst"])])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_user_error(res, "manifest says" if sizes == "as-before" else "compression ratio")
    assert peak < 32 * MiB, f"peak {peak / MiB:.0f} MiB while refusing a {BOMB // MiB} MiB bomb"
    assert_unchanged(before, snapshot(area["tmp"]))


def test_members_are_streamed_in_bounded_blocks(made, area, runner):
    """A 64 MiB member whose sha256 is wrong is refused without holding it in memory."""
    draft = Draft(made.pack, made.key, area["outside"])
    bad = draft.write(area["tmp"] / "big.zip")
    name = draft.name("features/c/9/0")
    with zipfile.ZipFile(bad) as zf:
        manifest = json.loads(zf.read(MANIFEST))
    manifest["files"][name] = "0" * 64
    if "sizes" in manifest:  # packs of older featstore have none: the zip's size bounds it
        manifest["sizes"][name] = 64 * MiB
    rebuilt = area["tmp"] / "bad.zip"
    with zipfile.ZipFile(bad) as zin, zipfile.ZipFile(rebuilt, "w") as zout:
        for info in zin.infolist():
            if info.filename != MANIFEST:
                zout.writestr(info, zin.read(info))
        with zout.open(zipfile.ZipInfo(name), "w", force_zip64=True) as w:
            for _ in range(64):
                w.write(bytes(MiB))
        zout.writestr(MANIFEST, json.dumps(manifest))
    bad.unlink()
    before = snapshot(area["tmp"])
    tracemalloc.start()
    try:
        res = runner.invoke(cli, ["unpack", str(rebuilt), str(area["dst"])])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_user_error(res, "sha256")
    assert peak < 16 * MiB, f"peak {peak / MiB:.0f} MiB for a 64 MiB member"
    assert_unchanged(before, snapshot(area["tmp"]))


def test_a_pack_larger_than_the_free_space_is_refused(made, area, runner, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    before = snapshot(area["tmp"])
    assert_user_error(runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])]),
                      "free")
    assert_unchanged(before, snapshot(area["tmp"]))


# -- roots that cannot be written -------------------------------------------------------
def _sysfs_refuses_writes() -> bool:
    probe = Path("/sys/fs/featstore-probe")
    try:
        probe.mkdir()
    except OSError:
        return True
    probe.rmdir()
    return False


@pytest.mark.parametrize("where", ["/sys/fs", "/sys/fs/featstore-root"])
def test_unpack_into_an_unwritable_system_folder(made, runner, where):
    """sysfs refuses writes even to root (an existing folder, and one to be created)."""
    if not _sysfs_refuses_writes():
        pytest.skip("sysfs is writable here")
    res = runner.invoke(cli, ["unpack", str(made.pack), where])
    assert_user_error(res, "write")
    assert not Path(where, f"{made.key}.zarr").exists()


def _fail_under(root: Path, err: int, real: Callable, *, arg: Callable[[Any], str] = str
                ) -> Callable:
    """``real`` (an os function), raising OSError(err) for paths under ``root``."""
    def fake(path, *a, **kw):
        if arg(path).startswith(str(root)) and not os.path.exists(path):
            raise OSError(err, os.strerror(err), str(path))
        return real(path, *a, **kw)
    return fake


def test_unpack_into_a_read_only_root_is_one_line(made, area, runner, monkeypatch):
    """A root on a read-only file system (EROFS for every folder made under it)."""
    monkeypatch.setattr(os, "mkdir", _fail_under(area["dst"], errno.EROFS, os.mkdir))
    before = snapshot(area["tmp"])
    res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    assert_user_error(res, "read-only file system", "root you can write to")
    assert_unchanged(before, snapshot(area["tmp"]))


def test_a_full_disk_while_unpacking_leaves_nothing(made, area, runner, monkeypatch):
    """ENOSPC when a staged file is flushed: one line, no staging folder left behind."""
    def where(fd: int) -> str:
        return os.readlink(f"/proc/self/fd/{fd}")

    staged = area["dst"] / ".unpack-"
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: real(fd) if not where(fd).startswith(
        str(staged)) else (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device")))
    before = snapshot(area["tmp"])
    res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    assert_user_error(res, "full")
    assert_unchanged(before, snapshot(area["tmp"]))


# -- links inside a store folder: pack and copy refuse, never follow --------------------
SECRET = b"root:x:0:0:featstore-secret-7f3a91c2"


def _link_chunk(set_dir: Path, secret: Path) -> str:
    (set_dir / CHUNK).unlink()
    (set_dir / CHUNK).symlink_to(secret)
    return CHUNK


def _link_extra_file(set_dir: Path, secret: Path) -> str:
    (set_dir / "notes").symlink_to(secret)
    return "notes"


def _link_folder(set_dir: Path, secret: Path) -> str:
    (set_dir / "extra").symlink_to(secret.parent, target_is_directory=True)
    return "extra"


def _link_whole_set(set_dir: Path, secret: Path) -> str:
    real = secret.parent / "real.zarr"
    shutil.move(set_dir, real)
    shutil.copyfile(secret, real / "notes")
    set_dir.symlink_to(real, target_is_directory=True)
    return set_dir.name


LINKS = {"chunk": _link_chunk, "extra-file": _link_extra_file, "folder": _link_folder,
         "whole-set": _link_whole_set}


@pytest.mark.parametrize("command", ["pack", "copy", "copy --dry-run"])
@pytest.mark.parametrize("kind", sorted(LINKS))
def test_pack_and_copy_refuse_links_in_a_store(made, tmp_path, runner, kind, command):
    src = tmp_path / "src"
    shutil.copytree(made.root, src)
    (tmp_path / "secret").mkdir()
    secret = tmp_path / "secret" / "passwd"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    link = LINKS[kind](src / f"{made.key}.zarr", secret)
    out = tmp_path / ("out.zip" if command == "pack" else "dst")
    before = snapshot(tmp_path)
    res = runner.invoke(cli, [command.split()[0], str(src), str(out), *command.split()[1:]])
    assert_user_error(res, "link", link)
    assert not out.exists()  # and so the secret is nowhere outside its own folder
    assert_unchanged(before, snapshot(tmp_path))


def test_copy_refuses_a_destination_set_with_a_link_out(made, area, runner):
    """A partial set at the destination whose features folder links outside the root."""
    partial = area["dst"] / f"{made.key}.zarr"
    partial.mkdir()
    (area["outside"] / "features").mkdir()
    (partial / "features").symlink_to(area["outside"] / "features", target_is_directory=True)
    before = snapshot(area["tmp"])
    assert_user_error(runner.invoke(cli, ["copy", str(made.root), str(area["dst"])]),
                      "link", "features")
    assert_unchanged(before, snapshot(area["tmp"]))


# -- the key's lease while unpacking ----------------------------------------------------
def _slow_reads(monkeypatch, seconds: float) -> None:
    real = zipfile.ZipFile.open

    def slow(self, name, mode="r", *a, **kw):
        if mode == "r":
            time.sleep(seconds)
        return real(self, name, mode, *a, **kw)
    monkeypatch.setattr(zipfile.ZipFile, "open", slow)


def _short_leases(monkeypatch, seconds: float) -> None:
    leasemod = importlib.import_module("featstore.store.lease")  # hold_lease makes its Lease
    class Short(leasemod.Lease):
        def __init__(self, root, key, **kw):
            super().__init__(root, key, seconds=seconds)
    monkeypatch.setattr(leasemod, "Lease", Short)


def test_unpack_renews_its_lease_so_no_one_takes_the_key(made, area, runner, monkeypatch):
    from featstore.store.lease import Lease

    _short_leases(monkeypatch, 1.2)
    _slow_reads(monkeypatch, 0.25)  # 16 members: about 4 s, over three lease periods
    final, taken, done = area["dst"] / f"{made.key}.zarr", [], threading.Event()

    def competitor() -> None:
        """Takes the lease when it can: legitimately only once the set is in place."""
        rival = Lease(area["dst"], made.key, seconds=1.2)
        while rival.holder() is None and not done.is_set():
            time.sleep(0.01)  # until unpack holds the lease
        while not done.is_set():
            if rival.acquire():
                taken.append(final.exists())
                rival.release(remove=True)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=competitor)
    thread.start()
    try:
        res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    finally:
        done.set()
        thread.join()
    assert res.exit_code == 0, res.output
    assert taken in ([], [True]), "another writer took the key's lease while unpack wrote it"


def test_unpack_that_lost_its_lease_moves_nothing_into_place(made, area, runner, monkeypatch):
    from featstore.store.lease import Lease

    def storage_down(self) -> None:
        raise OSError(errno.EIO, "storage unreachable")

    monkeypatch.setattr(Lease, "renew", storage_down)
    _short_leases(monkeypatch, 0.6)
    _slow_reads(monkeypatch, 0.1)
    before = snapshot(area["tmp"])
    res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    assert_user_error(res, "lease")
    assert_unchanged(before, snapshot(area["tmp"]))


# -- what must keep working -------------------------------------------------------------
def _files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha(p.read_bytes())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_genuine_pack_unpacks_byte_identical_with_sizes(made, area, runner):
    with zipfile.ZipFile(made.pack) as zf:
        manifest = json.loads(zf.read(MANIFEST))
        assert manifest["sizes"] == {i.filename: i.file_size for i in zf.infolist()
                                     if i.filename != MANIFEST}
    res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    assert res.exit_code == 0 and "unpacked" in res.output, res.output
    name = f"{made.key}.zarr"
    assert _files(area["dst"] / name) == _files(made.root / name)
    assert {p.name for p in area["dst"].iterdir()} == {"keep.txt", name}
    res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    assert res.exit_code == 0 and "present" in res.output, res.output


@pytest.mark.parametrize("style", ["old-manifest-without-sizes", "re-zipped-deflated-with-folders"])
def test_older_and_re_zipped_packs_still_unpack(made, area, runner, style):
    draft = Draft(made.pack, made.key, area["outside"])
    if style.startswith("old"):
        del draft.manifest["sizes"]
    else:
        for info, _ in draft.members:
            info.compress_type = zipfile.ZIP_DEFLATED
        draft.members.insert(0, (zipfile.ZipInfo(draft.set + "/"), b""))
    pack = draft.write(area["tmp"] / "other.zip")
    res = runner.invoke(cli, ["unpack", str(pack), str(area["dst"])])
    assert res.exit_code == 0 and "unpacked" in res.output, res.output
    name = f"{made.key}.zarr"
    assert _files(area["dst"] / name) == _files(made.root / name)


def test_a_staging_folder_left_by_a_killed_unpack_is_removed(made, area, runner):
    stale = area["dst"] / f".unpack-{made.key}-dead0000" / f"{made.key}.zarr"
    stale.mkdir(parents=True)
    (stale / "zarr.json").write_text("half-written by a killed unpack")
    res = runner.invoke(cli, ["unpack", str(made.pack), str(area["dst"])])
    assert res.exit_code == 0 and "unpacked" in res.output, res.output
    assert {p.name for p in area["dst"].iterdir()} == {"keep.txt", f"{made.key}.zarr"}
