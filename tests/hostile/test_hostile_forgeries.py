"""Forged and tampered sets that passed the first round of hostile-input checks, found by
a review: cleared chunk records in a complete set, a set put under another key's name,
HDF5 datasets that read other files, and user files inside a folder named like a key."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from featstore.errors import StoreCorruptError
from featstore.store import Root, open_store
from featstore_cli.main import cli
from helpers import assert_unchanged, assert_user_error, make_images, snapshot, tiny_extract_args

MANIFEST = "featstore-pack.json"


def _data(folder: Path, seed: int) -> Path:
    images, labels = make_images(40, seed=seed)
    path = folder / f"tiny{seed}.npz"
    np.savez(path, x=images, y=labels)
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two sets (A, B) of different data in one root, as Zarr, and A as HDF5."""
    base = tmp_path_factory.mktemp("forge")
    runner = CliRunner()
    a, b = _data(base, 0), _data(base, 1)
    for data, extra in ((a, ()), (b, ()), (a, ("--format", "hdf5"))):
        res = runner.invoke(cli, tiny_extract_args(data, base / "root", *extra))
        assert res.exit_code == 0, res.output
    entries = {(Path(e.metadata["dataset"]["name"]).name, e.format): e
               for e in Root(base / "root")}
    return {"base": base, "a": a, "b": b, "A": entries[("tiny0.npz", "zarr")],
            "B": entries[("tiny1.npz", "zarr")], "H": entries[("tiny0.npz", "hdf5")]}


def _copy_set(entry, root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    dst = root / entry.path.name
    (shutil.copytree if entry.path.is_dir() else shutil.copy2)(entry.path, dst)
    return dst


def _pack(files: dict[str, bytes], sets: list[dict], out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(MANIFEST, json.dumps({
            "format": "featstore-pack", "version": 1, "sets": sets,
            "files": {n: hashlib.sha256(d).hexdigest() for n, d in files.items()},
            "sizes": {n: len(d) for n, d in files.items()}}))
    return out


@pytest.mark.parametrize("delete_chunk", [False, True])
def test_a_complete_set_with_cleared_chunk_records_is_damaged(made, tmp_path, delete_chunk):
    path = _copy_set(made["A"], tmp_path / "root")
    zarr.open_group(str(path), mode="r+")["chunk_sha256"][:] = ""
    if delete_chunk:
        shutil.rmtree(path / "features" / "c")
    with pytest.raises(StoreCorruptError, match="no recorded sha256"):
        open_store(path)
    res = CliRunner().invoke(cli, ["tune", "--train", str(path), "--test", str(path),
                                   "--method", "lp", "--seeds", "1", "--epochs", "1"])
    assert_user_error(res, "damaged")
    # The same extraction repairs it: every chunk is extracted again, the set verifies.
    res = CliRunner().invoke(cli, tiny_extract_args(made["a"], tmp_path / "root", "--json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)[0]
    assert out["cached"] is False and out["computed_chunks"] == 2
    with open_store(path) as fs:
        assert fs.verify().ok


def test_a_set_under_another_keys_name_is_refused(made, tmp_path):
    """Set A's files under key B's name, its metadata's key changed to B and the manifest
    rebuilt: the key is not the hash of the recorded inputs, so unpack refuses it (and
    it is never served as B's cache hit)."""
    a, b = made["A"], made["B"]
    files = {}
    for p in sorted(a.path.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            rel = p.relative_to(a.path).as_posix()
            if rel == "zarr.json":
                meta = json.loads(data)
                meta["attributes"]["featstore"]["key"] = b.key
                data = json.dumps(meta).encode()
            files[f"{b.key}.zarr/{rel}"] = data
    pack = _pack(files, [{"key": b.key, "name": f"{b.key}.zarr", "format": "zarr"}],
                 tmp_path / "forged.zip")
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(tmp_path)
    res = CliRunner().invoke(cli, ["unpack", str(pack), str(dest)])
    assert_user_error(res, "forged or renamed")
    assert_unchanged(before, snapshot(tmp_path))
    # Planted by hand instead: extract of B's data does not take it as a cache hit.
    planted = dest / f"{b.key}.zarr"
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    res = CliRunner().invoke(cli, tiny_extract_args(made["b"], dest, "--json"))
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["cached"] is False
    with open_store(planted) as fs, open_store(b.path) as ref:
        assert Path(fs.metadata["dataset"]["name"]).name == "tiny1.npz"
        assert fs.load_features().tobytes() == ref.load_features().tobytes()


@pytest.mark.parametrize("how", ["external-link", "soft-link", "external-storage"])
def test_hdf5_datasets_that_read_other_files_are_refused(made, tmp_path, how):
    outside = tmp_path / "outside.h5"
    with h5py.File(outside, "w") as f:
        f["labels"] = np.zeros(40, np.int64)
    raw = tmp_path / "outside.bin"
    raw.write_bytes(np.zeros(40, np.int64).tobytes())
    path = _copy_set(made["H"], tmp_path / "root")
    with h5py.File(path, "r+") as f:
        del f["labels"]
        if how == "external-link":
            f["labels"] = h5py.ExternalLink(str(outside), "labels")
        elif how == "soft-link":
            f["other"] = np.zeros(40, np.int64)
            f["labels"] = h5py.SoftLink("/other")
        else:
            f.create_dataset("labels", shape=(40,), dtype=np.int64,
                             external=[(str(raw), 0, 40 * 8)])
    with pytest.raises(StoreCorruptError, match="reads other files"):
        with open_store(path) as fs:
            fs.labels
    res = CliRunner().invoke(cli, ["verify", str(path)])
    assert res.exit_code != 0 and "Traceback" not in res.output
    files = {path.name: path.read_bytes()}
    pack = _pack(files, [{"key": made["H"].key, "name": path.name, "format": "hdf5"}],
                 tmp_path / "h5.zip")
    dest = tmp_path / "dest"
    dest.mkdir()
    before = snapshot(dest)
    res = CliRunner().invoke(cli, ["unpack", str(pack), str(dest)])
    assert_user_error(res)
    assert_unchanged(before, snapshot(dest))


@pytest.mark.parametrize("user_file", ["features/thesis.docx", "notes.txt",
                                       "features/c/0/draft.txt", "labels/c/x/0"])
def test_rm_never_removes_user_files_inside_a_folder_named_like_a_key(tmp_path, user_file):
    root = tmp_path / "root"
    folder = root / "0123456789abcdef01234567.zarr"
    (folder / "features").mkdir(parents=True)
    (folder / "zarr.json").write_text(
        '{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    (folder / user_file).parent.mkdir(parents=True, exist_ok=True)
    (folder / user_file).write_text("my work")
    before = snapshot(tmp_path)
    for args in (["rm", str(folder), "--yes"], ["rm", str(root), "--incomplete", "--yes"]):
        res = CliRunner().invoke(cli, args)
        assert "Removed 1" not in res.output
        assert_unchanged(before, snapshot(tmp_path))
