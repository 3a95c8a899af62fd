"""One conformance test over every tuner: the scikit-learn contract, validation,
determinism, persistence; plus what each tuner must do on its own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from featstore.errors import ConfigError, DataError
from featstore.tuners import LinearProbe, MLPTuner, NMTune, NotFittedError, BaseTuner

FAST = dict(epochs=15, batch_size=32, device="cpu")
TUNERS = [
    lambda: LinearProbe(lr=0.05, **FAST),
    lambda: MLPTuner(lr=3e-3, **FAST),
    lambda: NMTune(lr=3e-3, **FAST),
    lambda: NMTune.authors_variant(12, lr=3e-3, **FAST),
]
IDS = ["lp", "mlp", "nmtune", "nmtune-authors"]


def _data(n=240, d=12, classes=3, seed=0):
    centers = np.random.default_rng(0).normal(size=(classes, d)) * 2  # same task for every seed
    rng = np.random.default_rng(seed + 1)
    y = np.arange(n) % classes
    X = (centers[y] + rng.normal(size=(n, d))).astype(np.float32)
    return X, y


@pytest.mark.parametrize("make", TUNERS, ids=IDS)
def test_conformance(make, tmp_path):
    X, y = _data()
    Xt, yt = _data(seed=1)
    est = make()
    with pytest.raises(NotFittedError, match="not fitted yet"):
        est.predict(X)
    assert est.fit(X, y) is est
    assert est.n_features_in_ == 12 and est.classes_.tolist() == [0, 1, 2]
    assert len(est.history_) == 15 and est.history_[-1]["loss"] < est.history_[0]["loss"]
    assert est.score(Xt, yt) > 0.8
    proba = est.predict_proba(Xt)
    np.testing.assert_allclose(proba.sum(1), 1, rtol=1e-5)
    assert est.transform(Xt).shape == (240, 12)
    assert est.predict(torch.from_numpy(Xt)).tolist() == est.predict(Xt).tolist()
    # deterministic on CPU for a seed
    again = make().fit(X, y)
    np.testing.assert_array_equal(again.decision_function(Xt), est.decision_function(Xt))
    # get/set params round trip; saved heads load back and predict the same
    assert type(est)(**est.get_params()).get_params() == est.get_params()
    est.save(tmp_path / "head")
    loaded = BaseTuner.load(tmp_path / "head")
    np.testing.assert_allclose(loaded.decision_function(Xt), est.decision_function(Xt), rtol=1e-6)
    with pytest.raises(DataError, match="Expected 12 features"):
        est.predict(np.zeros((3, 5), np.float32))


@pytest.mark.parametrize("make", TUNERS, ids=IDS)
@pytest.mark.parametrize("param, value, message", [
    ("lr", -1, "The 'lr' parameter of {} must be a float in (0, inf). Got -1 instead."),
    ("epochs", 0, "The 'epochs' parameter of {} must be an int in [1, inf). Got 0 instead."),
    ("schedule", "step", "The 'schedule' parameter of {} must be one of 'cosine', 'linear', 'constant'. Got 'step' instead."),
])
def test_parameter_validation(make, param, value, message):
    est = make().set_params(**{param: value})
    with pytest.raises(ConfigError) as err:
        est.fit(*_data())
    assert str(err.value) == message.format(type(est).__name__)


def test_nmtune_lambda_validation():
    with pytest.raises(ConfigError, match="'lambda_svd' parameter of NMTune must be a float in \\[0, inf\\)"):
        NMTune(lambda_svd=-0.1).fit(*_data())


def test_bad_data():
    X, y = _data()
    X[0, 0] = np.nan
    with pytest.raises(DataError, match="NaN or inf"):
        LinearProbe(**FAST).fit(X, y)
    with pytest.raises(DataError, match="at least 2 classes"):
        LinearProbe(**FAST).fit(_data()[0], np.zeros(240, int))
    with pytest.raises(DataError, match="Expected 240 labels"):
        LinearProbe(**FAST).fit(_data()[0], np.zeros(10, int))


def test_regression_target():
    X, _ = _data()
    target = (X[:, 0] * 2 + X[:, 1]).astype(np.float32)
    est = MLPTuner(lr=3e-3, **FAST).fit(X, target)
    assert est.task_ == "regression" and est.score(X, target) > 0.75  # R², as scikit-learn's
    assert np.corrcoef(est.predict(X), target)[0, 1] > 0.9  # Pearson r, as `tune` reports


def test_nmtune_uses_two_cached_views():
    X, y = _data()
    rng = np.random.default_rng(3)
    views = np.stack([X, X + rng.normal(scale=0.1, size=X.shape).astype(np.float32)], axis=1)
    est = NMTune(lr=3e-3, **FAST).fit(views, y)
    assert est.score(X, y) > 0.8


def test_fit_on_a_store_and_refuse_another_backbone(tmp_path):
    from featstore.backbones import create_backbone
    from featstore.data._base import ArraySampleSet
    from featstore.extract import ExtractConfig, extract_one
    from featstore.store import open_store

    from helpers import make_images

    images, labels = make_images(90)
    samples = ArraySampleSet(data=images, name="t", split="train", modality="image",
                             sample_ids=[str(i) for i in range(90)], labels=labels)
    paths = []
    for seed in (0, 1):
        bb = create_backbone("timm:test_resnet", pretrained=False, image_size=32, seed=seed)
        cfg = ExtractConfig(backbones=["x"], datasets=["t"], root=str(tmp_path), num_workers=0,
                            progress=False)
        paths.append(extract_one(bb, samples, cfg, torch.device("cpu")).path)
    with open_store(paths[0]) as a, open_store(paths[1]) as b:
        est = LinearProbe(**FAST).fit(a)
        assert est.score(a) > 0.5
        with pytest.raises(DataError, match="another backbone"):
            est.predict(b)


def _labelled_store(path, X, y, valid, chunk_rows=32):
    """A complete store of X (float32) with labels y; rows where ``valid`` is False hold 0."""
    from featstore.store import create_store, schema

    n, d = len(X), X.shape[-1]
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "s" * 24, "complete": False,
            "n_samples": n, "n_features": d, "n_views": 1, "dtype": "float32",
            "chunk_rows": chunk_rows, "backbone": {"id": "synthetic"},
            "dataset": {"name": "t", "split": "train", "classes": None, "task": "classification"}}
    st = create_store(path, metadata=meta, n_features=d, n_views=1, dtype="float32",
                      chunk_rows=chunk_rows, sample_ids=[str(i) for i in range(n)],
                      labels=y, codec="zstd")
    for c in range(schema.n_chunks(n, chunk_rows)):
        s, e = schema.chunk_bounds(c, n, chunk_rows)
        st.write_chunk(c, np.where(valid[s:e, None], X[s:e], 0), valid[s:e])
    st.mark_complete()
    st.close()
    return path


def test_chunk_stream_visits_every_valid_row_once_per_epoch(tmp_path):
    from featstore.store import open_store
    from featstore.tuners.batches import ChunkStream

    X, y = _data(n=250)
    X[:, 0] = np.arange(250)  # a row's identity, to check coverage
    valid = np.ones(250, bool)
    valid[[7, 100, 249]] = False
    path = _labelled_store(tmp_path / "s.zarr", X, y, valid)
    with open_store(path) as fs:
        targets = torch.from_numpy(y[valid])
        stream = ChunkStream(fs, targets, batch_size=16, buffer_chunks=2)
        gen = torch.Generator().manual_seed(0)
        epoch1 = list(stream.epoch(gen, torch.device("cpu")))
        epoch2 = list(stream.epoch(gen, torch.device("cpu")))
    assert len(epoch1) == 247 // 16
    rows = torch.cat([xb[:, 0] for xb, _ in epoch1]).long()
    assert len(set(rows.tolist())) == len(rows) == 16 * (247 // 16)  # no row twice
    assert not set(rows.tolist()) & {7, 100, 249}  # invalid rows never trained on
    for xb, yb in epoch1:  # every row keeps its own label
        np.testing.assert_array_equal(yb.numpy(), y[xb[:, 0].long().numpy()])
    order1 = torch.cat([xb[:, 0] for xb, _ in epoch1])
    order2 = torch.cat([xb[:, 0] for xb, _ in epoch2])
    assert not torch.equal(order1, order2)  # reshuffled each epoch


@pytest.mark.parametrize("make", TUNERS[:3], ids=IDS[:3])
def test_streamed_training_never_loads_the_store(make, tmp_path, monkeypatch):
    """A store larger than memory is trained on chunk by chunk: same quality as in memory,
    deterministic for a seed, and ``load_features`` is never called."""
    from featstore.store import open_store
    from featstore.store._base import FeatureStore

    X, y = _data(n=300)
    Xt, yt = _data(seed=1)
    valid = np.ones(300, bool)
    valid[[3, 150]] = False
    path = _labelled_store(tmp_path / "s.zarr", X, y, valid)

    def refuse(self, **kw):
        raise AssertionError("load_features called while streaming")

    with open_store(path) as fs:
        in_memory = make().set_params(stream="never").fit(fs)
        assert not in_memory.streamed_
    monkeypatch.setattr(FeatureStore, "load_features", refuse)
    with open_store(path) as fs:
        est = make().set_params(stream="always").fit(fs)
        again = make().set_params(stream="always").fit(fs)
        assert est.streamed_ and est.score(Xt, yt) > 0.8
        assert abs(est.score(Xt, yt) - in_memory.score(Xt, yt)) < 0.05
        np.testing.assert_array_equal(est.decision_function(Xt), again.decision_function(Xt))
        # chunked inference on the store equals inference on its rows in memory
        np.testing.assert_allclose(est.decision_function(fs), est.decision_function(X[valid]),
                                   rtol=1e-5, atol=1e-6)


def test_stream_auto_follows_available_memory(tmp_path, monkeypatch):
    from featstore.store import open_store
    from featstore.tuners import batches

    X, y = _data(n=100)
    path = _labelled_store(tmp_path / "s.zarr", X, y, np.ones(100, bool))
    with open_store(path) as fs:
        assert not batches.should_stream(fs, "auto")
        monkeypatch.setattr(batches, "available_memory", lambda: 4 * 100 * 12 * 4 - 8)
        assert batches.should_stream(fs, "auto") and not batches.should_stream(fs, "never")
