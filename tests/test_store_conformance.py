"""The store contract (tests/store_conformance.py), run for every backend."""

from __future__ import annotations

import h5py
import zarr

from featstore.store import BACKENDS, backend_named, schema
from store_conformance import StoreConformance


class TestZarrStore(StoreConformance):
    backend = backend_named("zarr")

    def poke(self, path, array, index, value):
        zarr.open_array(str(path / array), mode="r+")[index] = value

    def drop_metadata(self, path):
        del zarr.open_group(str(path), mode="r+").attrs[schema.META_ATTR]


class TestHDF5Store(StoreConformance):
    backend = backend_named("hdf5")

    def poke(self, path, array, index, value):
        with h5py.File(path, "r+") as f:
            f[array][index] = value

    def drop_metadata(self, path):
        with h5py.File(path, "r+") as f:
            del f.attrs[schema.META_ATTR]


def test_every_backend_keeps_the_contract():
    """A new backend in featstore.store.BACKENDS needs its subclass here."""
    checked = {cls.backend for cls in StoreConformance.__subclasses__()}
    assert checked == set(BACKENDS)
