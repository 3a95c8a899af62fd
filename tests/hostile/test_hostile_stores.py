"""Damaged "complete" stores are never used silently (issue 10, items 5, 6 and 10).

Each case damages a copy of a small set made by `featstore extract` the way a disk, a
careless hand or a forger would — a deleted or truncated chunk file, a flipped bit, a
deleted array, relabelled rows, forged metadata — and runs the command a user would
run next. Readers (`tune`, `info`, `spectrum`) must stop with one `Error:` line that
names `featstore verify`, write nothing and show no traceback; `verify` must fail and
name the damaged array; rerunning `extract` must never call the set cached: it
re-extracts only the damaged chunks (the set ends byte-identical to the original) or,
where no chunk can repair it (labels, sample ids), says to use --force.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from helpers import (assert_unchanged, assert_user_error, make_images, snapshot,
                     tiny_extract_args)

from featstore.store import open_store
from featstore_cli.main import cli

FORMATS = ("zarr", "hdf5")


# -- one extracted set per format, copied for each case ---------------------------------
@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SimpleNamespace]:
    base = tmp_path_factory.mktemp("templates")
    images, labels = make_images(150)
    np.savez(base / "tiny.npz", x=images, y=labels)
    out = {}
    for fmt in FORMATS:
        res = CliRunner().invoke(cli, tiny_extract_args(base / "tiny.npz", base / fmt, "--json",
                                                        "--format", fmt))
        assert res.exit_code == 0, res.output
        [made] = json.loads(res.stdout)
        out[fmt] = SimpleNamespace(root=base / fmt, key=made["key"], npz=base / "tiny.npz",
                                   name=Path(made["path"]).name)
    return out


def _copy(templates: dict, fmt: str, tmp_path: Path) -> SimpleNamespace:
    t = templates[fmt]
    root = tmp_path / "root"
    shutil.copytree(t.root, root)
    return SimpleNamespace(root=root, key=t.key, npz=t.npz, path=root / t.name,
                           original=t.root / t.name)


@pytest.fixture
def zset(templates, tmp_path) -> SimpleNamespace:
    return _copy(templates, "zarr", tmp_path)


@pytest.fixture
def hset(templates, tmp_path) -> SimpleNamespace:
    return _copy(templates, "hdf5", tmp_path)


# -- ways to damage a Zarr set ----------------------------------------------------------
def _flip(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x5A
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def _rewrite(array: str, fn) -> callable:
    """Change values through zarr with a valid codec: the chunk decodes fine."""
    def damage(p: Path) -> None:
        arr = zarr.open_array(str(p / array), mode="r+")
        arr[...] = fn(arr[...])
    return damage


def _relabel(y: np.ndarray) -> np.ndarray:
    y = y.copy()
    y[:10] = (y[:10] + 1) % 3
    return y


def _drop_valid(v: np.ndarray) -> np.ndarray:
    v = v.copy()
    v[40] = False  # sample 40 silently dropped from training
    return v


def _rename_id(ids: np.ndarray) -> np.ndarray:
    ids = ids.copy()
    ids[5] = "someone-else"
    return ids


def _bump(f: np.ndarray) -> np.ndarray:
    f = f.copy()
    f[40, 1] += 1
    return f


def _forge_shape(p: Path) -> None:
    meta = json.loads((p / "features/zarr.json").read_text())
    meta["shape"][0] = 149
    (p / "features/zarr.json").write_text(json.dumps(meta))


#: name -> (damage, damaged array, chunks re-extracted by a rerun; None: only --force helps,
#: "all": the set is unreadable as a whole and a rerun starts it again)
ZARR_DAMAGE = {
    "features-chunk-deleted": (lambda p: (p / "features/c/2/0").unlink(), "features", [2]),
    "valid-chunk-deleted": (lambda p: (p / "valid/c/2").unlink(), "valid", [2]),
    "labels-chunk-deleted": (lambda p: (p / "labels/c/0").unlink(), "labels", None),
    "ids-chunk-deleted": (lambda p: (p / "sample_ids/c/0").unlink(), "sample_ids", None),
    "features-bit-flip": (lambda p: _flip(p / "features/c/1/0"), "features", [1]),
    "valid-bit-flip": (lambda p: _flip(p / "valid/c/1"), "valid", [1]),
    "labels-bit-flip": (lambda p: _flip(p / "labels/c/0"), "labels", None),
    "ids-bit-flip": (lambda p: _flip(p / "sample_ids/c/0"), "sample_ids", None),
    "features-truncated": (lambda p: _truncate(p / "features/c/3/0"), "features", [3]),
    "labels-truncated": (lambda p: _truncate(p / "labels/c/0"), "labels", None),
    "features-zarr-json-deleted": (lambda p: (p / "features/zarr.json").unlink(), "features", "all"),
    "valid-zarr-json-deleted": (lambda p: (p / "valid/zarr.json").unlink(), "valid", "all"),
    "labels-zarr-json-deleted": (lambda p: (p / "labels/zarr.json").unlink(), "labels", "all"),
    "features-shape-forged": (_forge_shape, "features", "all"),
    "relabelled-rows": (_rewrite("labels", _relabel), "labels", None),
    "valid-row-dropped": (_rewrite("valid", _drop_valid), "valid", [1]),
    "sample-id-renamed": (_rewrite("sample_ids", _rename_id), "sample_ids", None),
    "features-value-changed": (_rewrite("features", _bump), "features", [1]),
}
#: spectrum reads features and the valid mask only: labels and ids damage is not its concern
SPECTRUM_DAMAGE = [k for k, (_, array, _) in ZARR_DAMAGE.items()
                   if array not in ("labels", "sample_ids")]
#: info reads metadata, labels, ids and the valid mask, never the feature values: altered
#: feature bytes are found by the readers of features (and by verify)
INFO_DAMAGE = [k for k in ZARR_DAMAGE if k not in (
    "features-bit-flip", "features-truncated", "features-value-changed")]


def _run(args: list[str]) -> object:
    return CliRunner().invoke(cli, [str(a) for a in args])


def _reader_args(command: str, store: Path | str) -> list:
    if command == "tune":
        return ["tune", "--train", store, "--test", store, "--method", "lp", "--seeds", "1",
                "--epochs", "2", "--device", "cpu"]
    return [command, store]


def _by_prefix(s: SimpleNamespace) -> Path:
    """The set named as users do: ROOT/KEY_PREFIX."""
    return s.root / s.key[:8]


#: tune reads features, labels and the valid mask, never the sample ids
TUNE_DAMAGE = [k for k, (_, array, _) in ZARR_DAMAGE.items() if array != "sample_ids"]


@pytest.mark.parametrize("command, damage", [("tune", d) for d in TUNE_DAMAGE]
                         + [("info", d) for d in INFO_DAMAGE])
def test_readers_refuse_a_damaged_zarr_set(zset, damage, command):
    ZARR_DAMAGE[damage][0](zset.path)
    before = snapshot(zset.root)
    res = _run(_reader_args(command, _by_prefix(zset)))
    assert_user_error(res, "featstore verify", zset.key)
    assert_unchanged(before, snapshot(zset.root))


@pytest.mark.parametrize("damage", SPECTRUM_DAMAGE)
def test_spectrum_refuses_a_damaged_zarr_set(zset, damage):
    ZARR_DAMAGE[damage][0](zset.path)
    before = snapshot(zset.root)
    assert_user_error(_run(_reader_args("spectrum", _by_prefix(zset))), "featstore verify",
                      zset.key)
    assert_unchanged(before, snapshot(zset.root))


@pytest.mark.parametrize("damage", sorted(ZARR_DAMAGE))
def test_verify_names_the_damaged_array(zset, damage):
    fn, array, _ = ZARR_DAMAGE[damage]
    fn(zset.path)
    before = snapshot(zset.root)
    res = _run(["verify", zset.path, "--json"])
    assert_user_error(res, "failed verification")
    [report] = json.loads(res.stdout)
    assert not report["ok"]
    named = report["arrays"].get(array) or [p for p in report["problems"] if array in p]
    assert named, f"{array} not named: {report}"
    assert_unchanged(before, snapshot(zset.root))


def _files(path: Path) -> dict[str, bytes]:
    """Every file of a Zarr set; the group metadata without what differs between runs
    (the extraction's timings and creation time)."""
    out = {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
           if p.is_file() and p != path / "zarr.json"}
    meta = json.loads((path / "zarr.json").read_text())["attributes"]["featstore"]
    for run_specific in ("extraction", "created_at"):
        meta.pop(run_specific)
    out["zarr.json"] = json.dumps(meta, sort_keys=True).encode()
    return out


@pytest.mark.parametrize("damage", sorted(ZARR_DAMAGE))
def test_extract_rerun_never_calls_a_damaged_set_cached(zset, damage, caplog):
    fn, array, chunks = ZARR_DAMAGE[damage]
    fn(zset.path)
    caplog.set_level(logging.WARNING)
    res = _run(tiny_extract_args(zset.npz, zset.root, "--json"))
    if chunks is None:  # labels / ids: no chunk repairs them
        assert_user_error(res, "--force", "featstore verify")
        return
    assert res.exit_code == 0, res.output
    [made] = json.loads(res.stdout)
    assert made["cached"] is False
    if chunks != "all":
        assert made["computed_chunks"] == len(chunks) and made["resumed_chunks"] == 5 - len(chunks)
        assert f"{len(chunks)} damaged chunk(s) {chunks}" in caplog.text
    # repaired: byte-identical to the set before the damage, and verified
    assert _files(zset.path) == _files(zset.original)
    assert _run(["verify", zset.path]).exit_code == 0


def test_deleted_chunk_fails_tune_then_extract_repairs_only_it(zset):
    """The user's path: tune fails naming verify; verify lists the chunk; extract repairs."""
    (zset.path / "features/c/2/0").unlink()
    train = _by_prefix(zset)
    assert_user_error(_run(_reader_args("tune", train)), "featstore verify", "chunks [2]")
    res = _run(["verify", train])
    assert_user_error(res, "failed verification")
    assert "file features/c/2/0 is missing" in res.stdout
    made = json.loads(_run(tiny_extract_args(zset.npz, zset.root, "--json")).stdout)[0]
    assert (made["cached"], made["computed_chunks"]) == (False, 1)
    res = _run(_reader_args("tune", train))
    assert res.exit_code == 0, res.output


def test_bit_flip_is_repaired_with_verify_repair_then_extract(zset):
    _flip(zset.path / "features/c/1/0")
    res = _run(["verify", zset.path, "--repair"])
    assert_user_error(res, "marked for re-extraction")
    assert "REPAIR" in res.stdout and "[1]" in res.stdout
    with pytest.raises(Exception, match="incomplete"):
        open_store(zset.path)  # never read as complete while damaged
    made = json.loads(_run(tiny_extract_args(zset.npz, zset.root, "--json")).stdout)[0]
    assert (made["cached"], made["computed_chunks"]) == (False, 1)
    assert _files(zset.path) == _files(zset.original)


def test_reads_can_opt_out_of_hashing(zset, monkeypatch):
    """FEATSTORE_VERIFY_READS=0 skips hashing (documented), never the missing-file check."""
    _rewrite("features", _bump)(zset.path)
    monkeypatch.setenv("FEATSTORE_VERIFY_READS", "0")
    res = _run(_reader_args("tune", zset.path))
    assert res.exit_code == 0, res.output  # the user asked for speed over checks
    with open_store(zset.path, verify_reads=True) as fs, pytest.raises(Exception, match="sha256"):
        fs.load_features()
    (zset.path / "features/c/2/0").unlink()
    assert_user_error(_run(_reader_args("tune", zset.path)), "featstore verify", "chunks [2]")


# -- HDF5: one file, damage found by reading -------------------------------------------
def _h5_flip(dataset: str, where) -> callable:
    """Flip a byte of ``dataset``'s stored data, located by HDF5 itself."""
    def damage(p: Path) -> None:
        with h5py.File(p, "r") as f:
            offset = where(f[dataset].id)
        _flip(p, offset)
    return damage


def _chunk_middle(index: int):
    def where(dsid) -> int:
        info = dsid.get_chunk_info(index)
        return info.byte_offset + info.size // 2
    return where


HDF5_DAMAGE = {
    "features-chunk-bit-flip": (_h5_flip("features", _chunk_middle(2)), "features", [2]),
    "valid-chunk-bit-flip": (_h5_flip("valid", _chunk_middle(1)), "valid", [1]),
    # labels are stored contiguous: row 7's int64, lowest byte
    "labels-bit-flip": (_h5_flip("labels", lambda d: d.get_offset() + 8 * 7), "labels", None),
    # sample ids: the length field of row 5's variable-length string reference
    "ids-bit-flip": (_h5_flip("sample_ids", lambda d: d.get_offset() + 16 * 5), "sample_ids",
                     None),
}


@pytest.mark.parametrize("command, damage", [("verify", d) for d in sorted(HDF5_DAMAGE)] + [
    ("tune", d) for d in sorted(HDF5_DAMAGE) if HDF5_DAMAGE[d][1] != "sample_ids"])
def test_damaged_hdf5_set_is_refused(hset, damage, command):
    HDF5_DAMAGE[damage][0](hset.path)
    before = snapshot(hset.root)
    if command == "verify":
        res = _run(["verify", hset.path, "--json"])
        assert_user_error(res, "failed verification")
        [report] = json.loads(res.stdout)
        assert report["arrays"][HDF5_DAMAGE[damage][1]], report
    else:
        assert_user_error(_run(_reader_args(command, hset.path)), "featstore verify", hset.key)
    assert_unchanged(before, snapshot(hset.root))


@pytest.mark.parametrize("damage", sorted(HDF5_DAMAGE))
def test_extract_rerun_repairs_or_refuses_a_damaged_hdf5_set(hset, damage):
    _, array, chunks = HDF5_DAMAGE[damage]
    HDF5_DAMAGE[damage][0](hset.path)
    res = _run(tiny_extract_args(hset.npz, hset.root, "--json", "--format", "hdf5"))
    if chunks is None:  # labels / ids: no chunk repairs them
        assert_user_error(res, "--force", "featstore verify")
        return
    assert res.exit_code == 0, res.output
    made = json.loads(res.stdout)[0]
    assert (made["cached"], made["computed_chunks"]) == (False, len(chunks))
    with open_store(hset.path) as fs, open_store(hset.original) as ref:
        assert fs.verify().ok
        assert fs.load_features().tobytes() == ref.load_features().tobytes()
        assert (fs.valid == ref.valid).all()


# -- forged metadata ------------------------------------------------------------------
def _set_meta(path: Path, fn) -> None:
    doc = json.loads((path / "zarr.json").read_text())
    doc["attributes"]["featstore"] = fn(doc["attributes"]["featstore"])
    (path / "zarr.json").write_text(json.dumps(doc))


FORGED = {
    "schema-version-string": (lambda m: {**m, "schema_version": "1"}, "schema_version"),
    "schema-version-float": (lambda m: {**m, "schema_version": 1.0}, "schema_version"),
    "schema-version-bool": (lambda m: {**m, "schema_version": True}, "schema_version"),
    "schema-version-negative": (lambda m: {**m, "schema_version": -1}, "schema_version"),
    "metadata-a-list": (lambda m: [m], "not an object"),
    "metadata-a-string": (lambda m: "featstore", "not an object"),
    "chunk-rows-zero": (lambda m: {**m, "chunk_rows": 0}, "chunk_rows"),
    "n-samples-negative": (lambda m: {**m, "n_samples": -5}, "n_samples"),
    "n-features-string": (lambda m: {**m, "n_features": "96"}, "n_features"),
    "n-views-bool": (lambda m: {**m, "n_views": True}, "n_views"),
    "key-a-path": (lambda m: {**m, "key": "../../etc"}, "key"),
    "complete-a-string": (lambda m: {**m, "complete": "yes"}, "complete"),
    "arrays-sha256-a-list": (lambda m: {**m, "arrays_sha256": ["x"]}, "arrays_sha256"),
    "dataset-a-string": (lambda m: {**m, "dataset": "mnist"}, "dataset"),
    "n-samples-too-large": (lambda m: {**m, "n_samples": 10 ** 12}, "shape"),
}


@pytest.mark.parametrize("command", ["info", "verify", "tune"])
@pytest.mark.parametrize("forgery", sorted(FORGED))
def test_forged_metadata_is_one_clear_error(zset, forgery, command):
    fn, needle = FORGED[forgery]
    _set_meta(zset.path, fn)
    before = snapshot(zset.root)
    res = _run(_reader_args(command, zset.path))
    if command == "verify":  # a FAILED report above, then one Error line
        assert_user_error(res, "failed verification")
        assert needle in res.output
    else:
        assert_user_error(res, needle)
    assert_unchanged(before, snapshot(zset.root))


def test_newer_schema_is_still_a_schema_error(zset):
    _set_meta(zset.path, lambda m: {**m, "schema_version": 99})
    assert_user_error(_run(["info", zset.path]), "upgrade featstore")


def test_legacy_set_verifies_and_says_labels_are_unchecked(zset):
    """A set written before arrays_sha256 existed is still read and verified."""
    _set_meta(zset.path, lambda m: {k: v for k, v in m.items() if k != "arrays_sha256"})
    res = _run(["verify", zset.path])
    assert res.exit_code == 0, res.output
    assert "labels, sample_ids unchecked" in res.stdout
