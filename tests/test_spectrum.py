"""Spectrum metrics through the streamed Gram matrix equal numpy's SVD."""

from __future__ import annotations

import numpy as np
import pytest

from featstore.analysis.spectrum import (gram_from_chunks, lsvr, singular_values,
                                         spectrum_of_array, spectrum_of_store, sve)
from featstore.errors import DataError
from featstore.store import create_store, open_store, schema


def _prep(x, how):
    if how in ("l2", "l2-rowmean"):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    if how == "l2-rowmean":
        x = x - x.mean(1, keepdims=True)
    if how == "center":
        x = x - x.mean(0)
    return x


@pytest.mark.parametrize("how", ["none", "l2", "center", "l2-rowmean"])
@pytest.mark.parametrize("n, d", [(500, 40), (30, 60)])
def test_matches_numpy_svd(how, n, d):
    rng = np.random.default_rng(n + d)
    x = np.maximum(rng.normal(size=(n, d)) * rng.random(d), 0) + 0.01
    gram, rows = gram_from_chunks(np.array_split(x, 7), how)
    sigma = singular_values(gram, rows)
    ref = np.linalg.svd(_prep(x, how), compute_uv=False)
    assert len(sigma) == min(n, d)
    assert abs(sve(sigma) - sve(ref)) < 1e-6
    assert abs(lsvr(sigma) - lsvr(ref)) < 1e-6


def test_flatter_spectrum_has_larger_sve_and_lsvr():
    rng = np.random.default_rng(0)
    flat = rng.normal(size=(400, 32))
    peaked = flat * np.geomspace(10, 0.1, 32)
    a, b = spectrum_of_array(flat, "none"), spectrum_of_array(peaked, "none")
    assert a.sve > b.sve and a.lsvr > b.lsvr and a.effective_rank > b.effective_rank
    assert b.top_k_energy["1"] > a.top_k_energy["1"]


def test_store_streaming_skips_invalid_rows(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 12)).astype(np.float32)
    valid = np.ones(100, bool)
    valid[[5, 50]] = False
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "k", "complete": False,
            "n_samples": 100, "n_features": 12, "chunk_rows": 32}
    st = create_store(tmp_path / "s.zarr", metadata=meta, n_features=12, n_views=1,
                      dtype="float32", chunk_rows=32, sample_ids=[str(i) for i in range(100)],
                      labels=None, codec="zstd")
    for c in range(4):
        s, e = schema.chunk_bounds(c, 100, 32)
        st.write_chunk(c, np.where(valid[s:e, None], x[s:e], 0), valid[s:e])
    st.mark_complete()
    with open_store(tmp_path / "s.zarr") as fs:
        got = spectrum_of_store(fs, "l2")
    ref = spectrum_of_array(x[valid], "l2")
    assert got.n_rows == 98 and abs(got.sve - ref.sve) < 1e-6


def test_nan_features_rejected():
    with pytest.raises(DataError, match="NaN or inf"):
        spectrum_of_array(np.array([[1.0, np.nan], [0.0, 1.0]]))
