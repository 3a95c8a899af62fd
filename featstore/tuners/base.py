"""The scikit-learn estimator every tuner is, and its training loop.

The tuners inherit scikit-learn's ``BaseEstimator`` and mixins, declare their
parameters in ``_parameter_constraints`` (scikit-learn's ``Interval``/``StrOptions``,
checked by ``fit`` through ``_fit_context``), check arrays with ``validate_data`` and
fitted state with ``check_is_fitted``; ``parametrize_with_checks`` runs scikit-learn's
own suite over them (tests/test_sklearn_estimators.py).
"""

from __future__ import annotations

import json
import math
import time
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin, _fit_context
from sklearn.utils import RegressorTags
from sklearn.utils._param_validation import Interval
from sklearn.utils.metaestimators import available_if
from torch import nn

from featstore.errors import DataError
from featstore.tuners.checks import InvalidParameterError, NotFittedError  # noqa: F401 (re-export)
from featstore.tuners.checks import check_fitted, check_params, choices
from featstore.tuners.inputs import (check_features, check_targets, is_store, store_backbone_key,
                                     store_features, store_labels, store_task)
from featstore.utils.atomic import atomic_write
from featstore.utils.devices import resolve_device


def _json_value(v: Any) -> Any:
    """numpy scalars (from a parameter grid) as the Python numbers they hold."""
    return v.item() if isinstance(v, np.generic) else str(v)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A tensor on ``x``'s memory (a copy if it is read-only, e.g. a memory map, which
    torch cannot share)."""
    x = np.ascontiguousarray(x)
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def _classifies(est: "BaseTuner") -> bool:
    return getattr(est, "task_", est.task) != "regression"


class BaseTuner(ClassifierMixin, TransformerMixin, BaseEstimator):
    """Trains a head on frozen features; subclasses define the network and the loss.

    One class serves both tasks, set by ``task``: ``"auto"`` (the default) takes a
    store's recorded task, else scikit-learn's ``type_of_target`` (only continuous
    targets are a regression: strings, integers and 0.0/1.0 floats are classes).
    The estimator is a *classifier* for scikit-learn (``is_classifier``, stratified
    folds, accuracy as ``score``) unless ``task="regression"``, which makes it a
    regressor (plain folds, R² as ``score``, no ``predict_proba``/``decision_function``).
    scikit-learn decides folds and scoring before it sees y, so regression in
    ``GridSearchCV``/``cross_val_score`` needs ``task="regression"``.

    Parameters
    ----------
    lr, weight_decay : float
        AdamW's learning rate (> 0) and decoupled weight decay (>= 0).
    epochs : int
        Passes over the data (>= 1); the last partial batch of each is dropped.
    batch_size : int
        Rows per step (>= 2); fewer rows than this train as one batch.
    schedule : {"cosine", "linear", "constant"}
        The learning-rate factor over the steps.
    task : {"auto", "classification", "regression"}
        See above.
    device : str or torch.device
        "auto" (a GPU if there is one), "cpu", "cuda", "cuda:N", "mps".
    stream : {"auto", "always", "never"}
        For a store: read it chunk by chunk ("auto": when its features would take more
        than a quarter of the available memory).
    random_state : int or None
        Seeds the initialisation and the data order; training is deterministic on the
        CPU for a seed.

    Attributes
    ----------
    task_, classes_ (classification), n_features_in_, feature_names_in_ (DataFrame
    input), history_ (loss and seconds per epoch), backbone_key_ (a store's backbone;
    None for arrays), streamed_, model_ (the torch module, in eval mode).
    """

    _parameter_constraints: dict[str, list[Any]] = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 2, None, closed="left")],
        "schedule": [choices("cosine", "linear", "constant")],
        "task": [choices("auto", "classification", "regression")],
        "device": [str, torch.device],
        "stream": [choices("auto", "always", "never")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30,
                 batch_size: int = 64, schedule: str = "cosine", task: str = "auto",
                 device: str = "auto", stream: str = "auto", random_state: int | None = 0):
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.schedule = schedule
        self.task = task
        self.device = device
        self.stream = stream
        self.random_state = random_state

    # -- scikit-learn plumbing -----------------------------------------------------------
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True  # (N, K, D): K cached views of each sample
        tags.transformer_tags.preserves_dtype = ["float32"]  # transform gives float32 always
        if self.task == "regression":
            tags.estimator_type, tags.classifier_tags = "regressor", None
            tags.regressor_tags = RegressorTags()
        return tags

    def _validate_params(self) -> None:
        """scikit-learn's check of ``_parameter_constraints`` (called by ``fit``), raising
        :class:`~featstore.tuners.checks.InvalidParameterError` (also a ConfigError)."""
        check_params(self)

    # -- to override ----------------------------------------------------------------------
    def _build(self, dim: int, n_out: int) -> nn.Module:
        raise NotImplementedError

    # -- fit / predict --------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any = None) -> "BaseTuner":
        """Fit on features (N, D) or (N, K, D) (array-like or torch tensor) with labels
        ``y``, or on an open store (labels, task and backbone from the store). A store
        whose features do not fit in memory is streamed chunk by chunk
        (``stream="auto"``)."""
        from featstore.tuners.batches import ChunkStream, in_memory_batches

        X, store, y, recorded = self._fit_inputs(X, y)
        n = len(X) if X is not None else int(store.valid.sum())
        if n < 2:  # a batch of one has no variance (BatchNorm, NMTune's covariance term)
            raise DataError(f"Expected at least 2 samples to train on, got n_samples = {n}.")
        task, y = check_targets(y, n, self.task, recorded)
        self.task_ = task
        if task == "classification":
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise DataError(f"Expected at least 2 classes in y, got {len(self.classes_)} "
                                "class. A classifier needs samples of several classes.")
            target = torch.from_numpy(y_idx.astype(np.int64))
            n_out = len(self.classes_)
        else:
            if hasattr(self, "classes_"):
                del self.classes_  # from an earlier fit on classes
            target = torch.from_numpy(y.astype(np.float32))
            n_out = 1
        device = resolve_device(self.device)
        if self.random_state is not None:
            torch.manual_seed(self.random_state)
        model = self._build(self.n_features_in_, n_out).to(device)
        batch_size = min(self.batch_size, n)
        if X is None:  # a store, streamed
            epoch_batches = ChunkStream(store, target, batch_size).epoch
        else:
            Xd, yd = _tensor(X).to(device), target.to(device)

            def epoch_batches(gen, device):
                return in_memory_batches(Xd, yd, batch_size, gen, device)
        self.streamed_ = X is None
        self.history_ = self._train(model, n, epoch_batches, device)
        self.model_ = model.eval()
        return self

    def _fit_inputs(self, X: Any, y: Any) -> tuple[np.ndarray | None, Any, Any, str | None]:
        """Features in memory (None: the store is streamed), the store (None for
        arrays), labels and the store's recorded task; sets ``n_features_in_`` and
        ``backbone_key_``."""
        from featstore.tuners.batches import should_stream

        if not is_store(X):
            if y is None:
                raise DataError(f"{type(self).__name__} requires y to be passed, but the target "
                                "y is None: pass labels y, or fit on a store with labels.")
            self.backbone_key_ = None
            return check_features(self, X, reset=True), None, y, None
        store = X
        y = store_labels(store, y)
        self.__dict__.pop("feature_names_in_", None)  # from an earlier fit on a DataFrame
        self.backbone_key_ = store_backbone_key(store)
        self.n_features_in_ = int(store.n_features)
        n_valid = int(store.valid.sum())
        if len(y) != n_valid:
            raise DataError(f"Expected {n_valid} labels (one per valid row of {store.path}), "
                            f"got {len(y)}.")
        X = None if should_stream(store, self.stream) else store_features(store)
        return X, store, y, store_task(store)

    def _train(self, model: nn.Module, n: int, epoch_batches: Any, device: torch.device
               ) -> list[dict[str, float]]:
        """AdamW + schedule; one shuffled pass per epoch; deterministic for a seed on CPU."""
        opt = torch.optim.AdamW(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        # the last partial batch is dropped; fewer samples than batch_size make one batch
        steps_per_epoch = n // min(self.batch_size, n)
        total = self.epochs * steps_per_epoch
        sched = {
            "cosine": lambda s: 0.5 * (1 + math.cos(math.pi * s / total)),
            "linear": lambda s: 1 - s / total,
            "constant": lambda s: 1.0,
        }[self.schedule]
        lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, sched)
        gen = torch.Generator().manual_seed(self.random_state if self.random_state is not None else 0)
        history = []
        for epoch in range(self.epochs):
            model.train()
            t0, total_loss = time.perf_counter(), 0.0
            for xb, yb in epoch_batches(gen, device):
                loss = self._batch_loss(model, xb, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                lr_sched.step()
                total_loss += float(loss.detach())
            history.append({"epoch": epoch + 1, "loss": total_loss / steps_per_epoch,
                            "seconds": time.perf_counter() - t0})
        return history

    def _batch_loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The supervised loss of the head on view 0 (subclasses with a tuner override it:
        models.MLPTuner trains on every view, NMTune adds its regularisers)."""
        f = xb[:, 0] if xb.ndim == 3 else xb
        out = model.head(model.tuner(f) if hasattr(model, "tuner") else f)
        if self.task_ == "classification":
            return nn.functional.cross_entropy(out, yb)
        return nn.functional.mse_loss(out.squeeze(-1), yb)

    def _apply(self, X: Any, fn: Any) -> np.ndarray:
        """``fn`` (tensor -> tensor) over the features of X (view 0 of K views), chunk by
        chunk for a store that is streamed; returns numpy."""
        from featstore.tuners.batches import iter_store_rows, should_stream

        check_fitted(self)
        if is_store(X):
            self.check_backbone(store_backbone_key(X))
            blocks = iter_store_rows(X) if should_stream(X, self.stream) else iter([store_features(X)])
        else:
            blocks = iter([check_features(self, X, reset=False)])
        device = next(self.model_.parameters()).device
        out = []
        with torch.inference_mode():
            for x in blocks:
                if x.ndim == 3:
                    x = x[:, 0]
                if x.shape[1] != self.n_features_in_:
                    raise DataError(f"X has {x.shape[1]} features, but {type(self).__name__} is "
                                    f"expecting {self.n_features_in_} features as input. Expected "
                                    f"{self.n_features_in_} features: use a store of the backbone "
                                    "and layer the head was trained on.")
                out.append(fn(_tensor(x).to(device)).cpu().numpy())
        return np.concatenate(out)

    def check_backbone(self, key: str | None) -> None:
        """Refuse features of another backbone than the one this head was trained on
        (``key``: :func:`featstore.utils.keys.backbone_key` of a store's metadata; None
        for plain arrays, which carry no key and are not checked)."""
        if key and self.backbone_key_ and key != self.backbone_key_:
            raise DataError("These features come from another backbone (weights, layer, pooling "
                            "or preprocessing) than the one this head was trained on; use a "
                            "store of the same backbone.")

    def _z(self, f: torch.Tensor) -> torch.Tensor:
        return self.model_.tuner(f) if hasattr(self.model_, "tuner") else f

    def transform(self, X: Any) -> np.ndarray:
        """The tuned features z, float32 (for LP: the input features)."""
        return self._apply(X, self._z)

    def _outputs(self, X: Any) -> np.ndarray:
        """The head's outputs: (N, n_classes) logits, or (N, 1) regression values."""
        return self._apply(X, lambda f: self.model_.head(self._z(f)))

    @available_if(_classifies)
    def decision_function(self, X: Any) -> np.ndarray:
        """Logits (N, n_classes); for two classes the log-odds of ``classes_[1]``, (N,)."""
        logits = self._outputs(X)
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits

    @available_if(_classifies)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (N, n_classes), float64, in the order of ``classes_``."""
        logits = self._outputs(X).astype(np.float64)
        e = np.exp(logits - logits.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        out = self._outputs(X)
        if self.task_ == "classification":
            return self.classes_[out.argmax(1)]
        return out[:, 0]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Accuracy (classification) or R² (regression) on X, y; for a store, y defaults
        to its labels."""
        from sklearn.metrics import accuracy_score, r2_score

        if y is None and is_store(X):
            y = store_labels(X)
        pred = self.predict(X)
        y = np.asarray(y.detach().cpu().numpy() if isinstance(y, torch.Tensor) else y)
        if self.task_ == "classification":
            return float(accuracy_score(y, pred, sample_weight=sample_weight))
        return float(r2_score(y, pred, sample_weight=sample_weight))

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` (weights) and ``PATH.json`` (params, classes, key),
        each whole or not at all; the .json, which :meth:`load` reads first, last."""
        from safetensors.torch import save

        check_fitted(self)
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        atomic_write(path.with_suffix(".safetensors"), save(state))
        meta = {"tuner": type(self).__name__, "params": self.get_params(), "task": self.task_,
                "classes": self.classes_.tolist() if self.task_ == "classification" else None,
                "n_features_in": self.n_features_in_, "backbone_key": self.backbone_key_}
        atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2, default=_json_value))
        return path.with_suffix(".json")

    @classmethod
    def load(cls, path: str | Path) -> "BaseTuner":
        """A head written by :meth:`save`. Weights are read with safetensors only (never
        unpickled); anything else at ``path`` is refused as not a featstore head."""
        from safetensors.torch import load_file

        from featstore.tuners.registry import head_classes

        path = Path(path)

        def foreign(why: str) -> DataError:
            return DataError(f"{path} is not a featstore head ({why}). Save heads with "
                             "`featstore tune --save-heads DIR` and pass DIR/METHOD-seedK.")

        try:
            meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise foreign(f"its .json cannot be read: {type(err).__name__}") from None
        need = {"tuner", "params", "task", "classes", "n_features_in", "backbone_key"}
        if not isinstance(meta, dict) or not need <= set(meta):
            raise foreign(f"its .json must be an object with keys {sorted(need)}")
        known = head_classes()
        klass = known.get(meta["tuner"]) if isinstance(meta["tuner"], str) else None
        if klass is None:
            raise foreign(f"unknown tuner {str(meta['tuner'])[:40]!r}; expected one of "
                          f"{', '.join(known)}")
        try:
            tuner = klass(**meta["params"])
            tuner._validate_params()
            classes, dim = meta["classes"], int(meta["n_features_in"])
            n_out = len(classes) if classes is not None else 1
            with torch.device("meta"):  # sizes from a foreign .json allocate nothing
                model = tuner._build(dim, n_out)
        except (TypeError, ValueError) as err:  # ConfigError is a ValueError
            raise foreign(f"its parameters do not fit {meta['tuner']}: {type(err).__name__}") from None
        weights = path.with_suffix(".safetensors")
        if not weights.is_file():
            raise foreign(f"{weights.name} is missing")
        try:
            state = load_file(str(weights))
        except Exception as err:  # safetensors' own error type; the file is not unpickled
            raise foreign(f"its weights are not a safetensors file: {type(err).__name__}") from None
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError:
            raise foreign("its weights do not match its .json (names or shapes)") from None
        tuner.task_ = meta["task"]
        tuner.classes_ = np.array(classes) if classes is not None else None
        tuner.n_features_in_ = dim
        tuner.backbone_key_ = meta["backbone_key"]
        tuner.model_ = model.eval()
        return tuner
