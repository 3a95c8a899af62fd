"""Many heads in one pass (featstore.tuners.grid): every head equals the same head trained
alone with the same data order; passes are shared as documented; streaming works."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featstore.errors import ConfigError
from featstore.tuners import LinearProbe, MLPTuner, NMTune
from featstore.tuners.batches import in_memory_batches
from featstore.tuners.grid import fit_grid

FAST = dict(epochs=3, batch_size=32, device="cpu")
KINDS = {
    "lp": lambda **kw: LinearProbe(**FAST, **kw),
    "mlp": lambda **kw: MLPTuner(**FAST, **kw),
    "mlp-batchnorm": lambda **kw: MLPTuner(batchnorm=True, residual=True, **FAST, **kw),
    "nmtune": lambda **kw: NMTune(**FAST, **kw),
    "nmtune-authors": lambda **kw: NMTune.authors_variant(12, **FAST, **kw),
}
POINTS = [dict(lr=1e-3, weight_decay=0.0), dict(lr=3e-2, weight_decay=1e-3, schedule="linear"),
          dict(lr=1e-2, weight_decay=1e-4, schedule="constant")]


def _data(n=200, d=12, classes=3, seed=0):
    centers = np.random.default_rng(0).normal(size=(classes, d)) * 2
    rng = np.random.default_rng(seed + 1)
    y = np.arange(n) % classes
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def _max_diff(a, b) -> float:
    sa, sb = a.model_.state_dict(), b.model_.state_dict()
    assert sa.keys() == sb.keys()
    return max(float((sa[k].double() - sb[k].double()).abs().max()) for k in sa)


@pytest.mark.parametrize("kind", list(KINDS))
def test_grid_head_equals_the_head_trained_alone(kind):
    """Seeds change data order and initialisation: one pass per seed, and every head
    equals its solo fit (same predictions, same weights to 1e-6)."""
    X, y = _data()
    make = KINDS[kind]
    grid = [make(random_state=seed, **p) for seed in (0, 1) for p in POINTS]
    assert fit_grid(grid, X, y) is not None
    for est in grid:
        solo = type(est)(**est.get_params()).fit(X, y)
        assert _max_diff(est, solo) <= 1e-6, est
        np.testing.assert_allclose(est.predict_proba(X), solo.predict_proba(X), atol=1e-6)
        assert len(est.history_) == FAST["epochs"]
        assert est.history_[-1]["loss"] == pytest.approx(solo.history_[-1]["loss"], rel=1e-5)
    assert {e.stack_size_ for e in grid} == {len(POINTS)}  # one stack per seed
    assert {e.data_seed_ for e in grid} == {0, 1}


def _solo_with_order(est, X, y, data_seed):
    """``est`` fitted alone, its data order drawn by ``data_seed`` (its init by its own
    random_state): the reference for a head whose seed only changes the init."""
    gen = torch.Generator().manual_seed(data_seed)
    Xd, yd = torch.from_numpy(X), torch.from_numpy(np.unique(y, return_inverse=True)[1])

    def train(model, n, epoch_batches, device):
        def ours(_gen, dev):  # the loop's own generator ignored: the shared order instead
            return in_memory_batches(Xd, yd, min(est.batch_size, n), gen, dev)
        return type(est)._train(est, model, n, ours, device)

    est._train = train
    try:
        return est.fit(X, y)
    finally:
        del est._train


@pytest.mark.parametrize("kind", ["lp", "mlp-batchnorm", "nmtune"])
def test_init_seeds_share_one_pass(kind):
    """With ``data_seed``, seeds change only the initialisation: all heads train in one
    pass, and each equals the solo head with that data order and its own init."""
    X, y = _data()
    make = KINDS[kind]
    grid = [make(random_state=seed, lr=lr) for seed in (3, 4, 5) for lr in (1e-3, 1e-2)]
    fit_grid(grid, X, y, data_seed=7)
    assert {e.stack_size_ for e in grid} == {6} and {e.data_seed_ for e in grid} == {7}
    for est in grid:
        ref = _solo_with_order(type(est)(**est.get_params()), X, y, data_seed=7)
        assert _max_diff(est, ref) <= 1e-6
    # different inits really differ
    assert _max_diff(grid[0], grid[2]) > 1e-3


def test_heads_of_different_shapes_and_losses_share_a_pass():
    """NMTune heads with different λ (or hidden sizes) train in the same pass, in
    separate stacks, each with exactly its own loss."""
    X, y = _data()
    grid = [NMTune(lambda_svd=s, lambda_cov=c, hidden=h, random_state=0, **FAST)
            for s in (0.0, 0.1) for c in (0.0, 0.05) for h in (8, 12)]
    fit_grid(grid, X, y)
    for est in grid:
        assert est.stack_size_ == 1
        assert _max_diff(est, NMTune(**est.get_params()).fit(X, y)) <= 1e-6
    assert _max_diff(grid[0], grid[2]) > 1e-4  # λ_cov changed the training


def test_grid_heads_are_ordinary_fitted_estimators(tmp_path):
    X, y = _data()
    [a, b] = fit_grid([LinearProbe(lr=0.05, **FAST), LinearProbe(lr=1e-4, **FAST)], X, y)
    assert a.score(X, y) > 0.9 and a.score(X, y) > b.score(X, y)
    a.save(tmp_path / "a")
    again = LinearProbe.load(tmp_path / "a.json")
    np.testing.assert_array_equal(again.predict(X), a.predict(X))


def test_grid_streams_a_store(tmp_path, monkeypatch):
    """A store streamed chunk by chunk trains the grid without loading it; the heads
    equal their solo streamed fits."""
    from featstore.store import open_store
    from featstore.store._base import FeatureStore

    from test_tuners import _labelled_store

    X, y = _data(n=260)
    valid = np.ones(260, bool)
    valid[[5, 99]] = False
    path = _labelled_store(tmp_path / "s.zarr", X, y, valid)

    def refuse(self, **kw):
        raise AssertionError("load_features called while streaming")

    monkeypatch.setattr(FeatureStore, "load_features", refuse)
    with open_store(path) as fs:
        grid = fit_grid([MLPTuner(lr=lr, stream="always", random_state=1, **FAST)
                         for lr in (1e-3, 1e-2)], fs)
        for est in grid:
            solo = MLPTuner(**est.get_params()).fit(fs)
            assert est.streamed_ and est.backbone_key_ == solo.backbone_key_
            assert _max_diff(est, solo) <= 1e-6


def test_store_loaded_once_for_all_heads(tmp_path, monkeypatch):
    from featstore.store import open_store
    from featstore.store._base import FeatureStore

    from test_tuners import _labelled_store

    X, y = _data(n=100)
    path = _labelled_store(tmp_path / "s.zarr", X, y, np.ones(100, bool))
    calls = []
    load = FeatureStore.load_features
    monkeypatch.setattr(FeatureStore, "load_features",
                        lambda self, **kw: calls.append(1) or load(self, **kw))
    with open_store(path) as fs:
        grid = fit_grid([LinearProbe(lr=lr, **FAST) for lr in (1e-3, 1e-2, 1e-1)], fs)
        key = LinearProbe(**FAST).fit(fs).backbone_key_
    assert len(calls) == 2  # once for the grid's three heads, once for the solo fit
    assert all(not e.streamed_ and e.backbone_key_ == key for e in grid)


def test_bad_data_seed_and_bad_parameters_are_refused():
    X, y = _data(n=50)
    with pytest.raises(ConfigError, match="data_seed"):
        fit_grid([LinearProbe(**FAST)], X, y, data_seed=-1)
    with pytest.raises(ConfigError, match="'lr' parameter of LinearProbe"):
        fit_grid([LinearProbe(**FAST), LinearProbe(lr=-1.0, **FAST)], X, y)
