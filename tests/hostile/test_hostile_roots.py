"""Hostile roots: `rm` removes only feature sets, damaged key folders never block a key,
`ls` shows damage, and bad roots (URLs, read-only, full disks) are one clear error.

Issue 10, items 3, 4 and parts of 10. Each case asserts what a user would notice: the
exit code, one `Error:` line, no traceback, and that nothing outside the target changed.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from helpers import assert_unchanged, assert_user_error, snapshot, tiny_extract_args

from featstore.store import create_store, location, schema
from featstore.store.lease import LEASE_DIR, Lease
from featstore_cli.main import cli

KEY_A, KEY_B, KEY_C = "a" * 24, "b" * 24, "c" * 24


def make_set(root: Path, key: str, *, complete: bool = True, fmt: str = "zarr",
             meta: dict | None = None) -> Path:
    """A small real feature set (the layout `featstore extract` writes)."""
    n, d, rows = 40, 4, 16
    metadata = {"schema_version": schema.SCHEMA_VERSION, "key": key, "complete": False,
                "n_samples": n, "n_features": d, "n_views": 1, "dtype": "float16",
                "chunk_rows": rows, "backbone": {"id": "timm:tiny"},
                "dataset": {"name": "hostile", "split": "train"}, **(meta or {})}
    path = root / f"{key}{'.zarr' if fmt == 'zarr' else '.h5'}"
    store = create_store(path, metadata=metadata, n_features=d, n_views=1, dtype="float16",
                         chunk_rows=rows, sample_ids=[f"s{i}" for i in range(n)],
                         labels=np.arange(n) % 2, codec="zstd")
    feats = np.random.default_rng(0).normal(size=(n, d)).astype(np.float16)
    for c in range(schema.n_chunks(n, rows)):
        s, e = schema.chunk_bounds(c, n, rows)
        store.write_chunk(c, feats[s:e], np.ones(e - s, bool))
    if complete:
        store.mark_complete()
    out = store.path
    store.close()
    return out


def make_newer_set(root: Path, key: str) -> Path:
    """A set as a future featstore (store schema + 1) would write it."""
    path = make_set(root, key)
    meta = json.loads((path / "zarr.json").read_text())["attributes"]["featstore"]
    set_group_attr(path, {**meta, "schema_version": schema.SCHEMA_VERSION + 1})
    return path


def set_group_attr(path: Path, value) -> None:
    """Overwrite the featstore attribute in a Zarr set's zarr.json with any JSON value."""
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["featstore"] = value
    (path / "zarr.json").write_text(json.dumps(meta))


@pytest.fixture(autouse=True)
def confine_rmtree(monkeypatch, tmp_path):
    """Safety net: a bug (or the code before the fix) must never remove a tree outside
    this test's folder: `/`, the home folder."""
    real = shutil.rmtree

    def guarded(path, *args, **kwargs):
        assert Path(path).resolve().is_relative_to(tmp_path.resolve()), f"rmtree({path})"
        return real(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", guarded)


@pytest.fixture
def root(tmp_path) -> Path:
    """A root with a complete set (A), an incomplete one (B) and an unrelated folder."""
    r = tmp_path / "root"
    make_set(r, KEY_A)
    make_set(r, KEY_B, complete=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "thesis.tex").write_text("years of work")
    return r


# -- rm: everything that is not a removable feature set is refused ------------------------
def _rm_cases(tmp_path: Path, root: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (rm arguments, needle of the one Error line); builds what each needs."""
    (tmp_path / "plain.txt").write_text("notes")
    (tmp_path / "tmp-like").mkdir()
    (tmp_path / "tmp-like" / "x.log").write_text("log")
    (root / "notakey.zarr").mkdir()
    (root / "notakey.zarr" / "data.bin").write_bytes(b"\0" * 10)
    foreign = root / f"{KEY_C}.zarr"  # named like a set, holds a stranger's files
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    (root / f"{'d' * 24}.h5").write_text("not HDF5 at all")
    os.symlink(root / f"{KEY_A}.zarr", tmp_path / "link.zarr")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling.zarr")
    os.symlink("/", tmp_path / "slash-link")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'")
    renamed = make_set(tmp_path / "renamed", KEY_A)
    renamed.rename(renamed.with_name(f"{'e' * 24}.zarr"))
    make_set(tmp_path / "amb", "f" * 24)
    make_set(tmp_path / "amb", "f" * 23 + "0")
    return {
        "root itself": ([str(root)], "is a root holding"),
        "root, trailing slash": ([str(root) + "/"], "is a root holding"),
        "tmp-like folder": ([str(tmp_path / "tmp-like")], "not a feature set"),
        "test folder": ([str(tmp_path)], "is a root holding"),
        "plain file": ([str(tmp_path / "plain.txt")], "is a file that is not a feature set"),
        "folder in a set": ([str(root / f"{KEY_A}.zarr" / "features")], "not a feature set"),
        "zarr.json of a set": ([str(root / f"{KEY_A}.zarr" / "zarr.json")], "is a file"),
        "non-key .zarr folder": ([str(root / "notakey.zarr")], "not a feature set"),
        "key folder, foreign files": ([str(foreign)], "holds files featstore never writes"),
        "key prefix, foreign files": ([str(root / KEY_C[:6])], "featstore never writes"),
        "key .h5, not HDF5": ([str(root / f"{'d' * 24}.h5")], "featstore never writes"),
        "symlink to a set": ([str(tmp_path / "link.zarr")], "symbolic link"),
        "dangling symlink": ([str(tmp_path / "dangling.zarr")], "symbolic link"),
        "symlink to /": ([str(tmp_path / "slash-link")], "symbolic link"),
        "/": (["/"], "file system root"),
        "home folder": ([str(home)], "home folder"),
        "missing prefix": ([str(root / "0123abc")], "No feature set with a key starting"),
        "missing store path": ([str(root / f"{'9' * 24}.zarr")], "No feature set at"),
        "missing parent": ([str(tmp_path / "no" / "such" / "abc")], "No feature set"),
        "renamed set": ([str(tmp_path / "renamed" / f"{'e' * 24}.zarr")], "renamed by hand"),
        "ambiguous prefix": ([str(tmp_path / "amb" / "fff")], "ambiguous"),
        "--incomplete on a file": ([str(tmp_path / "plain.txt"), "--incomplete"],
                                   "does not exist (or is not a folder)"),
        "--incomplete on a set": ([str(root / f"{KEY_B}.zarr"), "--incomplete"],
                                  "is a feature set, not a root"),
        "--incomplete, no root": ([str(tmp_path / "gone"), "--incomplete"], "does not exist"),
        "--incomplete on a link": ([str(tmp_path / "slash-link"), "--incomplete"],
                                   "symbolic link"),
        "http target": (["http://127.0.0.1:9/root/abc"], "cannot be roots"),
        "memory target": (["memory://root/abc"], "lost when it exits"),
    }


RM_CASES = ["root itself", "root, trailing slash", "tmp-like folder", "test folder",
            "plain file", "folder in a set", "zarr.json of a set", "non-key .zarr folder",
            "key folder, foreign files", "key prefix, foreign files", "key .h5, not HDF5",
            "symlink to a set", "dangling symlink", "symlink to /", "/", "home folder",
            "missing prefix", "missing store path", "missing parent", "renamed set",
            "ambiguous prefix", "--incomplete on a file", "--incomplete on a set",
            "--incomplete, no root", "--incomplete on a link", "http target", "memory target"]


@pytest.mark.parametrize("case", RM_CASES)
def test_rm_refuses_what_is_not_a_feature_set(runner, tmp_path, root, monkeypatch, case):
    args, needle = _rm_cases(tmp_path, root)[case]
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    before = snapshot(tmp_path)
    result = runner.invoke(cli, ["rm", *args, "--yes"])
    assert_user_error(result, needle)
    assert_unchanged(before, snapshot(tmp_path))


def test_rm_says_what_it_removes(runner, root):
    result = runner.invoke(cli, ["rm", str(root / KEY_A[:8]), "--yes"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("remove"))
    for part in ("complete", KEY_A, "timm:tiny", "hostile/train", "KB"):
        assert part in line, line
    assert not (root / f"{KEY_A}.zarr").exists() and (root / f"{KEY_B}.zarr").exists()
    assert not (root / LEASE_DIR).exists()  # rm's own lease is cleaned up


def test_rm_refuses_a_set_with_a_live_lease(runner, tmp_path, root):
    writer = Lease(root, KEY_B)
    assert writer.acquire()  # a running extraction of B, in this very process
    before = snapshot(tmp_path)
    result = runner.invoke(cli, ["rm", str(root / KEY_B[:6]), "--yes"])
    assert_user_error(result, "being written by", str(os.getpid()))
    assert_unchanged(before, snapshot(tmp_path))
    writer.release(remove=True)


def test_rm_incomplete_skips_live_sets_and_removes_the_rest(runner, tmp_path, root):
    damaged = make_set(root, KEY_C, complete=False)
    (damaged / "zarr.json").unlink()  # a writer killed before its metadata
    newer = make_newer_set(root, "0" * 24)
    writer = Lease(root, KEY_B)
    assert writer.acquire()
    result = runner.invoke(cli, ["rm", str(root), "--incomplete", "--yes"])
    assert result.exit_code == 0, result.output
    assert f"skip         {KEY_B}: being written by" in result.stderr
    assert (root / f"{KEY_B}.zarr" / "zarr.json").exists()  # the running writer's set stays
    assert not damaged.exists()                             # damaged: removed
    assert newer.exists() and (root / f"{KEY_A}.zarr").exists()  # never "incomplete"
    writer.release(remove=True)


def test_rm_removes_a_damaged_set_by_prefix(runner, root):
    (root / f"{KEY_B}.zarr" / "zarr.json").unlink()
    result = runner.invoke(cli, ["rm", str(root / KEY_B[:6]), "--yes"])
    assert result.exit_code == 0, result.output
    assert "damaged" in result.output and not (root / f"{KEY_B}.zarr").exists()


def test_rm_removes_a_set_whose_writer_died_here(runner, root):
    """A lease whose process is gone (kill -9 on this machine) does not protect the set."""
    dead = Lease(root, KEY_B)
    assert dead.acquire()
    lease_file = next((root / LEASE_DIR / KEY_B).glob("*.json"))
    data = json.loads(lease_file.read_text())
    lease_file.write_text(json.dumps({**data, "pid": 2 ** 22 + 12345}))  # no such process
    result = runner.invoke(cli, ["rm", str(root / KEY_B[:6]), "--yes"])
    assert result.exit_code == 0, result.output
    assert not (root / f"{KEY_B}.zarr").exists()


def test_rm_on_s3_respects_the_lease(runner, s3_root):
    """Object-store roots: the same refusal of a live writer's set, then a clean removal."""
    path = make_set(location.as_path(s3_root), KEY_B, complete=False)
    writer = Lease(s3_root, KEY_B)
    assert writer.acquire()
    result = runner.invoke(cli, ["rm", f"{s3_root}/{KEY_B[:6]}", "--yes"])
    assert_user_error(result, "being written by")
    assert location.exists(path / "zarr.json")
    writer.release(remove=True)
    result = runner.invoke(cli, ["rm", f"{s3_root}/{KEY_B[:6]}", "--yes"])
    assert result.exit_code == 0, result.output
    assert not location.exists(path / "zarr.json")


# -- ls: damaged sets are listed, never a traceback, never "complete" ---------------------
def _damage(path: Path, how: str) -> None:
    if how == "metadata is a list":
        set_group_attr(path, [1, 2, 3])
    elif how == "metadata is a string":
        set_group_attr(path, "complete")
    elif how == "metadata lacks fields":
        set_group_attr(path, {"schema_version": 1})
    elif how == "zarr.json is a list":
        (path / "zarr.json").write_text("[]")
    elif how == "zarr.json truncated":
        (path / "zarr.json").write_text((path / "zarr.json").read_text()[:40])
    elif how == "zarr.json missing":
        (path / "zarr.json").unlink()
    elif how == "zarr.json not UTF-8":
        (path / "zarr.json").write_bytes(b"\xff\xfe\x00garbage")
    elif how == "no featstore attribute":
        meta = json.loads((path / "zarr.json").read_text())
        meta["attributes"] = {}
        (path / "zarr.json").write_text(json.dumps(meta))


DAMAGES = ["metadata is a list", "metadata is a string", "metadata lacks fields",
           "zarr.json is a list", "zarr.json truncated", "zarr.json missing",
           "zarr.json not UTF-8", "no featstore attribute"]


@pytest.mark.parametrize("how", DAMAGES)
def test_ls_lists_damaged_sets(runner, root, how):
    _damage(root / f"{KEY_A}.zarr", how)
    result = runner.invoke(cli, ["ls", str(root)])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    row = next(x for x in result.stdout.splitlines() if x.startswith(KEY_A))
    assert "DAMAGED" in row and "complete" not in row
    assert f"damaged {KEY_A}" in result.stderr and "featstore rm" in result.stderr
    rows = {r["key"]: r for r in json.loads(runner.invoke(cli, ["ls", str(root), "--json"]).stdout)}
    assert rows[KEY_A]["state"] == "damaged" and rows[KEY_A]["complete"] is False
    assert rows[KEY_B]["state"] == "incomplete"


def test_ls_shows_a_newer_schema_as_not_complete(runner, root):
    make_newer_set(root, KEY_C)
    result = runner.invoke(cli, ["ls", str(root)])
    assert result.exit_code == 0, result.output
    row = next(x for x in result.stdout.splitlines() if x.startswith(KEY_C))
    assert "NEWER SCHEMA" in row and "complete" not in row
    assert "upgrade" in result.stderr
    rows = {r["key"]: r for r in json.loads(runner.invoke(cli, ["ls", str(root), "--json"]).stdout)}
    assert rows[KEY_C]["state"] == "newer schema" and rows[KEY_C]["complete"] is False


def test_ls_of_a_file_is_one_error(runner, tmp_path):
    (tmp_path / "f").write_text("x")
    assert_user_error(runner.invoke(cli, ["ls", str(tmp_path / "f")]), "is a file")


# -- roots the command line cannot use ----------------------------------------------------
BAD_ROOTS = [
    ("extract", "http://127.0.0.1:9/features", "cannot be roots"),
    ("extract", "https://127.0.0.1:9/features", "cannot be roots"),
    ("extract", "ftp://127.0.0.1:9/features", "read-only for featstore"),
    ("extract", "gs://team-bucket/features", "pip install 'featstore[gcs]'"),
    ("extract", "memory://features", "lost when it exits"),
    ("extract", "nosuchproto://x/features", "unknown protocol"),
    ("ls", "http://127.0.0.1:9/features", "cannot be roots"),
    ("ls", "gs://team-bucket/features", "pip install 'featstore[gcs]'"),
    ("ls", "memory://features", "lost when it exits"),
    ("copy-dst", "memory://features", "lost when it exits"),
    ("copy-src", "https://127.0.0.1:9/features", "cannot be roots"),
    ("ls", "ftp://127.0.0.1:9/features", "Cannot reach the root"),
    ("unpack", "gs://team-bucket/features", "read-only for featstore"),
    ("pack", "memory://features", "lost when it exits"),
    ("serve", "https://127.0.0.1:9/features", "cannot be roots"),
    ("rm --incomplete", "gs://team-bucket/features", "read-only for featstore"),
]


@pytest.mark.parametrize("command, url, needle", BAD_ROOTS)
def test_cli_refuses_roots_it_cannot_use(runner, tiny_npz, tmp_path, root, command, url,
                                         needle):
    args = {"extract": tiny_extract_args(tiny_npz, Path(url)),
            "ls": ["ls", url],
            "copy-dst": ["copy", str(root), url],
            "copy-src": ["copy", url, str(tmp_path / "dst")],
            "unpack": ["unpack", str(tmp_path / "some.zip"), url],
            "pack": ["pack", url, str(tmp_path / "out.zip")],
            "serve": ["serve", "--root", url, "--devices", "cpu"],
            "rm --incomplete": ["rm", url, "--incomplete", "--yes"]}[command]
    if command == "extract":
        args[args.index("--root") + 1] = url  # as typed (Path() would fold the //)
    before = snapshot(tmp_path)
    assert_user_error(runner.invoke(cli, args), needle)
    assert_unchanged(before, snapshot(tmp_path))


def test_extract_refuses_a_memory_root_from_a_config_file(runner, tiny_npz, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(f"backbones: [timm:test_resnet]\ndatasets: [{tiny_npz}]\nroot: memory://f\n")
    assert_user_error(runner.invoke(cli, ["extract", "--config", str(cfg)]), "memory://")


# -- read-only roots and full disks -------------------------------------------------------
@pytest.fixture
def read_only(monkeypatch):
    """Make every write under the folders given fail with EROFS, as on a read-only mount
    (tests run as root, so chmod cannot make a folder read-only)."""
    import builtins

    frozen: list[str] = []

    def under(p) -> bool:
        return isinstance(p, (str, os.PathLike)) and any(
            os.path.abspath(os.fspath(p)).startswith(f) for f in frozen)

    def refuse(p):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(p))

    real_open = builtins.open

    def fake_open(file, mode="r", *a, **k):
        if under(file) and any(c in mode for c in "wax+"):
            refuse(file)
        return real_open(file, mode, *a, **k)

    def guard(real):
        def fake(p, *a, **k):
            if under(p):
                refuse(p)
            return real(p, *a, **k)
        return fake

    monkeypatch.setattr(builtins, "open", fake_open)
    for name in ("mkdir", "unlink", "rmdir", "link", "rename", "replace"):
        monkeypatch.setattr(os, name, guard(getattr(os, name)))
    return lambda folder: frozen.append(os.path.abspath(folder))


def test_extract_into_a_read_only_root(runner, tiny_npz, tmp_path, read_only):
    root = tmp_path / "ro"
    root.mkdir()
    read_only(root)
    before = snapshot(tmp_path)
    assert_user_error(runner.invoke(cli, tiny_extract_args(tiny_npz, root)), "Cannot write",
                      "read-only")
    assert_unchanged(before, snapshot(tmp_path))


def test_rm_in_a_read_only_root(runner, tmp_path, root, read_only):
    read_only(root)
    before = snapshot(tmp_path)
    assert_user_error(runner.invoke(cli, ["rm", str(root / KEY_A[:6]), "--yes"]), "read-only")
    assert_unchanged(before, snapshot(tmp_path))


@pytest.fixture
def full_disk(monkeypatch):
    """fsync fails with ENOSPC: the data did not fit (after the file was created)."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)


def test_full_disk_when_a_lease_is_taken(tmp_path, full_disk):
    from featstore.errors import DiskFullError

    with pytest.raises(DiskFullError, match="is full"):
        Lease(tmp_path, KEY_A).acquire()
    assert list((tmp_path / LEASE_DIR / KEY_A).iterdir()) == []  # no stray temporary file


def test_full_disk_when_a_lease_is_renewed(tmp_path, monkeypatch):
    from featstore.errors import DiskFullError

    lease = Lease(tmp_path, KEY_A)
    assert lease.acquire()
    folder = tmp_path / LEASE_DIR / KEY_A
    before = sorted(p.name for p in folder.iterdir())
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, "")))
    with pytest.raises(DiskFullError):
        lease.renew()
    assert sorted(p.name for p in folder.iterdir()) == before


def test_extract_on_a_full_disk(runner, tiny_npz, tmp_path, full_disk):
    root = tmp_path / "full"
    assert_user_error(runner.invoke(cli, tiny_extract_args(tiny_npz, root)), "is full")
    leases = root / LEASE_DIR
    stray = [p for p in leases.rglob("*")] if leases.exists() else []
    assert not [p for p in stray if p.is_file()], stray


# -- a key folder without metadata never blocks the key ----------------------------------
def _set_files(path: Path) -> dict[str, bytes]:
    """Every file of a set but the group metadata (which holds times)."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file() and p.relative_to(path) != Path("zarr.json")}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[Path, Path, str]:
    """(data set, root, key) of one clean extraction, shared by the tests below."""
    from click.testing import CliRunner

    from helpers import make_images

    folder = tmp_path_factory.mktemp("clean")
    images, labels = make_images(48)
    np.savez(folder / "tiny.npz", x=images, y=labels)
    res = CliRunner().invoke(cli, tiny_extract_args(folder / "tiny.npz", folder / "root",
                                                    "--json"))
    assert res.exit_code == 0, res.output
    return folder / "tiny.npz", folder / "root", json.loads(res.stdout)[0]["key"]


@pytest.mark.parametrize("how", ["zarr.json missing", "metadata is a list",
                                 "zarr.json truncated"])
def test_extract_replaces_a_damaged_key_folder(runner, clean_run, tmp_path, caplog, how):
    data, clean, key = clean_run
    hit = tmp_path / "hit"
    shutil.copytree(clean / f"{key}.zarr", hit / f"{key}.zarr")
    _damage(hit / f"{key}.zarr", how)  # as a writer killed before its metadata leaves it
    res = runner.invoke(cli, tiny_extract_args(data, hit, "--json"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["cached"] is False
    assert any("is damaged" in r.getMessage() for r in caplog.records)
    assert _set_files(hit / f"{key}.zarr") == _set_files(clean / f"{key}.zarr")
    assert zarr.open_group(str(hit / f"{key}.zarr"), mode="r").attrs["featstore"]["complete"]
    assert not (hit / LEASE_DIR).exists()


def test_extract_leaves_a_stranger_folder_named_like_the_key(runner, clean_run, tmp_path):
    data, _, key = clean_run
    other = tmp_path / "other"
    (other / f"{key}.zarr").mkdir(parents=True)
    (other / f"{key}.zarr" / "thesis.tex").write_text("years of work")
    before = snapshot(other)
    assert_user_error(runner.invoke(cli, tiny_extract_args(data, other)), "in the way")
    assert_unchanged(before, snapshot(other))
