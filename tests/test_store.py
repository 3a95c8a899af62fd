"""What is particular to each format and to roots: HDF5's final name, schema checks,
plain readers, prefixes. What every backend does alike is in test_store_conformance.py."""

from __future__ import annotations

import json
import os
import time

import h5py
import numpy as np
import pytest
import zarr

from featstore.errors import (AmbiguousKeyError, SchemaVersionError, StoreIncompleteError,
                              StoreNotFoundError)
from featstore.store import Root, open_store, schema
from store_conformance import write_set as _make


def test_hdf5_appears_under_final_name_only_when_complete(tmp_path):
    path, *_ = _make(tmp_path / "b.h5", complete=False)
    assert path.name == "b.h5.partial" and not (tmp_path / "b.h5").exists()
    with pytest.raises(StoreIncompleteError, match="resume"):
        open_store(tmp_path / "b.h5")


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
    with pytest.raises(AmbiguousKeyError, match="ambiguous") as err:  # a LookupError
        root.find("a")
    assert isinstance(err.value, LookupError)
    with pytest.raises(StoreNotFoundError, match="featstore ls"):
        root.find("zz")
    root.remove("bbb")
    assert {e.key for e in root} == {"a" * 24, "ab" + "c" * 22}


# -- hold_lease: the one way writers hold a key ------------------------------------------
def test_hold_lease_renews_while_the_block_runs_and_leaves_nothing(tmp_path):
    from featstore.store.lease import LEASE_DIR, Lease, hold_lease

    with hold_lease(tmp_path, "k" * 24, seconds=0.3) as lease:
        rival = Lease(tmp_path, "k" * 24, seconds=0.3)
        deadline = time.monotonic() + 1.2  # four lease periods
        while time.monotonic() < deadline:
            assert not rival.acquire()  # renewed by the heartbeat: never expires
            time.sleep(0.05)
        lease.check()
    assert not (tmp_path / LEASE_DIR).exists()


def test_hold_lease_releases_when_the_block_fails(tmp_path):
    from featstore.store.lease import LEASE_DIR, Lease, hold_lease

    with pytest.raises(RuntimeError), hold_lease(tmp_path, "k" * 24):
        raise RuntimeError("a failed write")
    assert not (tmp_path / LEASE_DIR).exists()
    assert Lease(tmp_path, "k" * 24).acquire()  # free at once for the next writer


def test_hold_lease_waits_names_the_holder_and_stops_when_the_work_is_done(tmp_path, caplog):
    from featstore.store.lease import (FinishedMeanwhile, Lease, LeaseBusyError,
                                       hold_lease)

    holder = Lease(tmp_path, "k" * 24, seconds=30)
    assert holder.acquire()
    with pytest.raises(LeaseBusyError, match="being written by") as busy:
        with hold_lease(tmp_path, "k" * 24, wait=False):
            pytest.fail("ran without the lease")
    assert busy.value.holder.pid == os.getpid()
    calls = []

    def done_after_two_looks(info):
        calls.append(info.describe())
        return "their result" if len(calls) == 2 else None

    with pytest.raises(FinishedMeanwhile) as finished:
        with hold_lease(tmp_path, "k" * 24, on_wait=done_after_two_looks, what="the set"):
            pytest.fail("ran without the lease")
    assert finished.value.result == "their result" and len(calls) == 2
    assert "the set is being written by" in caplog.text and str(os.getpid()) in caplog.text
    holder.release(remove=True)
