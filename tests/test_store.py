"""The store format: round trips, completeness, checksums, schema checks, plain readers."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from featstore.errors import (SchemaVersionError, StoreIncompleteError, StoreNotFoundError,
                              ReadOnlyStoreError)
from featstore.store import Root, create_store, open_store, schema


def _meta(key: str = "k" * 24, n: int = 70, d: int = 5, rows: int = 32) -> dict:
    return {"schema_version": schema.SCHEMA_VERSION, "key": key, "complete": False,
            "n_samples": n, "n_features": d, "n_views": 1, "dtype": "float16",
            "chunk_rows": rows, "backbone": {"id": "test"},
            "dataset": {"name": "t", "split": "train", "classes": ["a", "b"], "task": "classification"}}


def _make(path, n=70, d=5, rows=32, views=1, complete=True, key="k" * 24):
    rng = np.random.default_rng(0)
    shape = (n, views, d) if views > 1 else (n, d)
    feats = rng.normal(size=shape).astype(np.float16)
    valid = np.ones(n, bool)
    valid[3] = False
    labels = rng.integers(0, 2, n)
    meta = {**_meta(key, n, d, rows), "n_views": views}
    store = create_store(path, metadata=meta, n_features=d, n_views=views, dtype="float16",
                         chunk_rows=rows, sample_ids=[f"id{i}" for i in range(n)],
                         labels=labels, codec="zstd")
    for c in range(schema.n_chunks(n, rows)):
        s, e = schema.chunk_bounds(c, n, rows)
        store.write_chunk(c, feats[s:e], valid[s:e])
    if complete:
        store.mark_complete()
    path = store.path
    store.close()
    return path, feats, valid, labels


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
@pytest.mark.parametrize("views", [1, 3])
def test_round_trip(tmp_path, suffix, views):
    path, feats, valid, labels = _make(tmp_path / f"a{suffix}", views=views)
    with open_store(path) as fs:
        assert fs.complete and fs.shape == feats.shape
        np.testing.assert_array_equal(fs.load_features(), feats)
        np.testing.assert_array_equal(fs.valid, valid)
        np.testing.assert_array_equal(fs.labels, labels)
        assert fs.sample_ids.tolist() == [f"id{i}" for i in range(70)]
        assert fs.load_features(as_torch=True).shape == feats.shape
        chunks = list(fs.iter_chunks())
        assert [(s, e) for s, e, _ in chunks] == [(0, 32), (32, 64), (64, 70)]
        np.testing.assert_array_equal(np.concatenate([b for *_, b in chunks]), feats)
        assert fs.verify().ok
        assert fs.classes == ["a", "b"]


def test_hdf5_appears_under_final_name_only_when_complete(tmp_path):
    path, *_ = _make(tmp_path / "b.h5", complete=False)
    assert path.name == "b.h5.partial" and not (tmp_path / "b.h5").exists()
    with pytest.raises(StoreIncompleteError, match="resume"):
        open_store(tmp_path / "b.h5")


def test_incomplete_zarr_refused_unless_asked(tmp_path):
    path, *_ = _make(tmp_path / "c.zarr", complete=False)
    with pytest.raises(StoreIncompleteError, match="Rerun the same"):
        open_store(path)
    with open_store(path, allow_incomplete=True) as fs:
        assert not fs.complete
        report = fs.verify()
        assert not report.ok and report.complete is False


def test_cannot_mark_complete_with_missing_chunks(tmp_path):
    store = create_store(tmp_path / "d.zarr", metadata=_meta(), n_features=5, n_views=1,
                         dtype="float16", chunk_rows=32, sample_ids=[f"i{i}" for i in range(70)],
                         labels=None, codec="zstd")
    store.write_chunk(0, np.zeros((32, 5)), np.ones(32, bool))
    with pytest.raises(StoreIncompleteError, match="never written"):
        store.mark_complete()
    assert store.committed_chunks() == {0}


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_verify_detects_changed_bytes(tmp_path, suffix):
    path, feats, *_ = _make(tmp_path / f"e{suffix}")
    if suffix == ".zarr":
        arr = zarr.open_array(str(path / "features"), mode="r+")
        arr[40, 0] = float(arr[40, 0]) + 1
    else:
        with h5py.File(path, "r+") as f:
            f["features"][40, 0] += 1
    with open_store(path) as fs:
        report = fs.verify()
    assert not report.ok and report.mismatched == [1]


def test_newer_schema_refused(tmp_path):
    path, *_ = _make(tmp_path / "f.zarr")
    g = zarr.open_group(str(path), mode="r+")
    meta = dict(g.attrs["featstore"])
    meta["schema_version"] = schema.SCHEMA_VERSION + 1
    g.attrs["featstore"] = meta
    with pytest.raises(SchemaVersionError, match="Upgrade featstore"):
        open_store(path)


def test_not_a_store(tmp_path):
    with pytest.raises(StoreNotFoundError):
        open_store(tmp_path / "nothing.zarr")
    (tmp_path / "plain.zarr").mkdir()
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    with pytest.raises(Exception, match="not a featstore feature set"):
        open_store(tmp_path / "plain.zarr")


def test_read_only_store_refuses_writes(tmp_path):
    path, *_ = _make(tmp_path / "g.zarr")
    with open_store(path) as fs, pytest.raises(ReadOnlyStoreError):
        fs.write_chunk(0, np.zeros((32, 5)), np.ones(32, bool))


def test_plain_readers_without_featstore(tmp_path):
    zpath, feats, valid, labels = _make(tmp_path / "p.zarr")
    hpath, *_ = _make(tmp_path / "p.h5")
    g = zarr.open_group(str(zpath), mode="r")
    np.testing.assert_array_equal(g["features"][:], feats)
    assert g.attrs["featstore"]["complete"] is True
    assert g["features"].metadata.dimension_names == ("sample", "feature")
    with h5py.File(hpath, "r") as f:
        np.testing.assert_array_equal(f["features"][:], feats)
        assert json.loads(f.attrs["featstore"])["complete"] is True
        assert f["features"].dims[0].label == "sample"
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(str(zpath), consolidated=False)
    assert ds["features"].dims == ("sample", "feature")
    np.testing.assert_array_equal(ds["labels"].values, labels)


def test_root_lists_and_resolves_prefixes(tmp_path):
    _make(tmp_path / ("a" * 24 + ".zarr"), key="a" * 24)
    _make(tmp_path / ("ab" + "c" * 22 + ".h5"), key="ab" + "c" * 22)
    _make(tmp_path / ("b" * 24 + ".zarr"), key="b" * 24, complete=False)
    root = Root(tmp_path)
    entries = {e.key: e for e in root}
    assert set(entries) == {"a" * 24, "ab" + "c" * 22, "b" * 24}
    assert entries["b" * 24].complete is False and entries["a" * 24].complete is True
    assert entries["a" * 24].summary()["n_features"] == 5
    with open_store(tmp_path / "abc") as fs:
        assert fs.format == "hdf5"
    with pytest.raises(Exception, match="ambiguous"):
        root.find("a")
    with pytest.raises(StoreNotFoundError, match="featstore ls"):
        root.find("zz")
    root.remove("bbb")
    assert {e.key for e in root} == {"a" * 24, "ab" + "c" * 22}
