"""The tuners are scikit-learn estimators: scikit-learn's own suite
(``parametrize_with_checks``) over all four, and what a scikit-learn user does with
them (clone, GridSearchCV, Pipeline, cross_val_score); the task from the targets or
the store, never from the label dtype."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import torch
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError as SklearnInvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from featstore.errors import ConfigError, DataError, FeatstoreError
from featstore.tuners import (BaseTuner, LinearProbe, LogRegBaseline, MLPTuner, NMTune,
                              NotFittedError)

# Few epochs keep the suite fast; lr is raised so that these still learn the checks' blobs.
FAST = dict(epochs=8, batch_size=16, device="cpu")
CHECKED = [LinearProbe(lr=0.05, **FAST), MLPTuner(lr=0.03, **FAST), NMTune(lr=0.03, **FAST),
           LogRegBaseline()]

# Each deliberate difference from scikit-learn's default expectations, with its reason.
AUTO_TASK = ("task='auto' fits continuous targets as a regression by design (the task comes "
             "from type_of_target or the store); task='classification' refuses them as the "
             "check wants")
EXPECTED_FAILURES = {
    "LinearProbe": {"check_classifiers_regression_target": AUTO_TASK},
    "MLPTuner": {"check_classifiers_regression_target": AUTO_TASK},
    "NMTune": {"check_classifiers_regression_target": AUTO_TASK},
    "LogRegBaseline": {},
}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny matmuls on a shared CPU: a second thread only spins (10x slower under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda est:
                         EXPECTED_FAILURES[type(est).__name__])
def test_scikit_learn_suite(estimator, check):
    check(estimator)


@parametrize_with_checks([LinearProbe(lr=0.05, task="regression", **FAST),
                          NMTune(lr=0.01, task="regression", **FAST)])
def test_scikit_learn_suite_as_regressors(estimator, check):
    """task="regression" makes each torch tuner a regressor, judged by the regressor checks."""
    check(estimator)


def _blobs(n=120, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)) * 3
    y = np.arange(n) % classes
    return (centers[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_every_parameter_is_an_explicit_keyword():
    for cls in (LinearProbe, MLPTuner, NMTune, LogRegBaseline):
        kinds = {p.kind for name, p in inspect.signature(cls.__init__).parameters.items()
                 if name != "self"}
        assert kinds == {inspect.Parameter.KEYWORD_ONLY}, cls
        assert set(cls._parameter_constraints) == set(cls().get_params()), cls
    assert {"lambda_svd", "depth", "lr", "random_state"} <= set(NMTune().get_params())


@pytest.mark.parametrize("est", CHECKED, ids=lambda e: type(e).__name__)
def test_clone_keeps_every_parameter(est):
    copy = clone(est)  # raises if get_params does not return what __init__ stored
    assert copy is not est and copy.get_params() == est.get_params()
    assert all(est.get_params()[k] is getattr(est, k) for k in est.get_params())


def test_grid_search_cross_val_and_pipeline():
    X, y = _blobs()
    grid = GridSearchCV(LinearProbe(**FAST), {"lr": [1e-4, 0.1]}, cv=3).fit(X, y)
    assert grid.best_params_ == {"lr": 0.1} and grid.best_score_ > 0.9
    assert grid.best_estimator_.predict(X).tolist() == grid.predict(X).tolist()
    pipe = make_pipeline(StandardScaler(), NMTune(lr=0.01, **FAST)).fit(X * 100 + 7, y)
    assert pipe.score(X * 100 + 7, y) > 0.9 and pipe.transform(X[:4]).shape == (4, 6)
    scores = cross_val_score(LogRegBaseline(), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.9
    scores = cross_val_score(MLPTuner(lr=0.01, **FAST), X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8  # chance: 1/3


def test_regression_in_grid_search_needs_task_regression():
    X, _ = _blobs()
    target = X[:, 0] * 2 - X[:, 1]
    assert is_classifier(LinearProbe()) and not is_regressor(LinearProbe())
    est = LinearProbe(task="regression", lr=0.05, **{**FAST, "epochs": 30})
    assert is_regressor(est) and not hasattr(est, "predict_proba")
    grid = GridSearchCV(est, {"weight_decay": [0.0, 1e-3]}, cv=3).fit(X, target)
    assert grid.best_score_ > 0.9  # R²


def test_task_from_targets_never_from_dtype():
    X, y = _blobs(classes=2)
    names = np.array(["cat", "dog"])[y]
    est = MLPTuner(lr=0.01, **FAST).fit(X, names)  # strings: classes (used to crash)
    assert est.task_ == "classification" and est.classes_.tolist() == ["cat", "dog"]
    assert set(est.predict(X)) <= {"cat", "dog"} and est.score(X, names) > 0.9
    assert est.decision_function(X).shape == (len(X),)  # binary: one score per sample
    assert ((est.decision_function(X) > 0) == (est.predict(X) == "dog")).all()
    as_float = LinearProbe(**FAST).fit(X, y.astype(np.float64))  # 0.0/1.0: classes
    assert as_float.task_ == "classification" and as_float.classes_.tolist() == [0.0, 1.0]
    forced = LinearProbe(task="regression", **FAST).fit(X, y.astype(np.float64))
    assert forced.task_ == "regression" and not hasattr(forced, "classes_")
    continuous = LinearProbe(**FAST).fit(X, X[:, 0] * 1.5)
    assert continuous.task_ == "regression" and continuous.predict(X).shape == (len(X),)
    with pytest.raises(DataError, match="Unknown label type: continuous.*task='regression'"):
        LinearProbe(task="classification", **FAST).fit(X, X[:, 0] * 1.5)
    with pytest.raises(DataError, match="needs numeric targets"):
        LinearProbe(task="regression", **FAST).fit(X, names)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("est", CHECKED, ids=lambda e: type(e).__name__)
def test_non_finite_targets_are_refused(est, bad):
    X, y = _blobs()
    target = y.astype(np.float64)
    target[5] = bad
    with pytest.raises(DataError, match=r"Labels contain NaN or inf \(first at row 5\)"):
        clone(est).fit(X, target)


def _store(path, X, y, task):
    """A complete single-chunk store of X with labels y that records ``task``."""
    from featstore.store import create_store, schema

    n, d = X.shape
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "t" * 24, "complete": False,
            "n_samples": n, "n_features": d, "n_views": 1, "dtype": "float32",
            "chunk_rows": n, "backbone": {"id": "synthetic"},
            "dataset": {"name": "t", "split": "train", "classes": None, "task": task}}
    st = create_store(path, metadata=meta, n_features=d, n_views=1, dtype="float32",
                      chunk_rows=n, sample_ids=[str(i) for i in range(n)], labels=y,
                      codec="zstd")
    st.write_chunk(0, X, np.ones(n, bool))
    st.mark_complete()
    st.close()
    return path


def test_store_task_is_passed_through(tmp_path):
    """A store that records a regression keeps it for integral targets (ratings 1.0 ...
    5.0 would otherwise be five classes), streamed or in memory."""
    from featstore.store import open_store

    X = np.random.default_rng(0).normal(size=(120, 6)).astype(np.float32)
    ratings = np.round(X[:, 0] * 1.5 + 3).clip(1, 5).astype(np.float32)
    assert LinearProbe(**FAST).fit(X, ratings).task_ == "classification"  # arrays: classes
    with open_store(_store(tmp_path / "r.zarr", X, ratings, "regression")) as fs:
        for stream in ("never", "always"):
            est = LinearProbe(lr=0.05, stream=stream, **{**FAST, "epochs": 30}).fit(fs)
            assert est.task_ == "regression" and est.score(fs) > 0.8  # R²
    with open_store(_store(tmp_path / "c.zarr", X, ratings, "classification")) as fs:
        assert LinearProbe(**FAST).fit(fs).classes_.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_errors_are_scikit_learns_and_featstores():
    with pytest.raises(SklearnNotFittedError) as err:
        NMTune().predict(np.zeros((2, 3)))
    assert isinstance(err.value, NotFittedError) and isinstance(err.value, FeatstoreError)
    with pytest.raises(SklearnInvalidParameterError) as err:
        NMTune(svd_top_k=0).fit(*_blobs())
    assert isinstance(err.value, ConfigError)
    assert str(err.value) == ("The 'svd_top_k' parameter of NMTune must be an int in [1, inf). "
                              "Got 0 instead.")
    with pytest.raises(ConfigError, match="The 'random_state' parameter of MLPTuner must be an "
                       r"int in \[0, inf\) or None. Got -1 instead."):
        MLPTuner(random_state=-1).fit(*_blobs())
    with pytest.raises(ConfigError, match="'Cs' parameter of LogRegBaseline must be a non-empty "
                       r"list of floats in \(0, inf\). Got \[1.0, -2.0\] instead."):
        LogRegBaseline(Cs=[1.0, -2.0]).fit(*_blobs())


def test_transform_is_float32_and_heads_from_a_grid_save(tmp_path):
    X, y = _blobs()
    est = NMTune(lr=0.01, **FAST).set_params(epochs=np.int64(3), lr=np.float64(0.01)).fit(X, y)
    assert est.transform(X.astype(np.float64)).dtype == np.float32
    est.save(tmp_path / "head")  # numpy scalars from a parameter grid are written as numbers
    assert json.loads((tmp_path / "head.json").read_text())["params"]["epochs"] == 3
    loaded = BaseTuner.load(tmp_path / "head")
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
