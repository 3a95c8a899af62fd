"""The scikit-learn estimator contract shared by every tuner, and its training loop."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from featstore.errors import ConfigError, DataError, FeatstoreError
from featstore.utils.atomic import atomic_write
from featstore.utils.devices import resolve_device
from featstore.utils.validation import INF, Interval, Options, OrNone, check


class NotFittedError(FeatstoreError, AttributeError):
    """predict/transform/score called before fit."""




def _is_store(X: Any) -> bool:
    return hasattr(X, "load_features") and hasattr(X, "metadata")


def _store_backbone_key(store: Any) -> str:
    from featstore.utils.keys import backbone_key

    return backbone_key(store.metadata)


def as_arrays(X: Any, y: Any = None) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """Features (N, D) or (N, K, D) and labels from numpy, torch or a store."""
    key = None
    if _is_store(X):
        store = X
        valid = store.valid
        key = _store_backbone_key(store)
        if y is None:
            y = store.labels
            if y is None:
                raise DataError(f"{store.path} has no labels; pass y, or extract a labelled split.")
            y = y[valid]
        X = store.load_features(dtype=np.float32)[valid]
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float32)
    if X.ndim not in (2, 3) or len(X) == 0:
        raise DataError(f"Expected features of shape (N, D) or (N, K, D) with N > 0; got {X.shape}.")
    if not np.isfinite(X).all():
        raise DataError("Features contain NaN or inf. Check the store with `featstore verify`, "
                        "or re-extract with --dtype float32 if values overflow float16.")
    if y is not None:
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        y = np.asarray(y)
        if y.shape != (len(X),):
            raise DataError(f"Expected {len(X)} labels, got shape {y.shape}.")
        if y.dtype.kind == "f" and not np.isfinite(y).all():
            i = int(np.flatnonzero(~np.isfinite(y))[0])
            raise DataError(f"Labels contain NaN or inf (first at row {i}): regression targets "
                            "must be finite.")
    return X, y, key


class BaseTuner:
    """Trains a head on frozen features; subclasses define the network and the loss."""

    _constraints: dict[str, Any] = {
        "lr": Interval(float, 0, INF, "neither"),
        "weight_decay": Interval(float, 0, INF, "left"),
        "epochs": Interval(int, 1, INF, "left"),
        "batch_size": Interval(int, 2, INF, "left"),
        "schedule": Options("cosine", "linear", "constant"),
        "task": Options("auto", "classification", "regression"),
        "stream": Options("auto", "always", "never"),
        "random_state": OrNone(Interval(int, 0, INF, "left")),
    }

    def __init__(self, *, lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30,
                 batch_size: int = 64, schedule: str = "cosine", task: str = "auto",
                 device: str = "auto", stream: str = "auto", random_state: int | None = 0):
        self.lr, self.weight_decay, self.epochs, self.batch_size = lr, weight_decay, epochs, batch_size
        self.schedule, self.task, self.device, self.random_state = schedule, task, device, random_state
        self.stream = stream

    # -- scikit-learn plumbing -----------------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        import inspect

        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" in klass.__dict__:
                for p in inspect.signature(klass.__init__).parameters.values():
                    if p.kind == p.KEYWORD_ONLY and p.name not in names:
                        names.append(p.name)
        return names

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._param_names()}

    def set_params(self, **params: Any) -> "BaseTuner":
        for k, v in params.items():
            if k not in self._param_names():
                raise ConfigError(f"{type(self).__name__} has no parameter {k!r}.")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def _validate_params(self) -> None:
        constraints: dict[str, Any] = {}
        for klass in reversed(type(self).__mro__):
            constraints.update(getattr(klass, "_constraints", {}))
        for name, rule in constraints.items():
            check(name, getattr(self, name), rule, owner=type(self).__name__, noun="parameter")

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call "
                                 "'fit' with appropriate arguments before using this estimator.")

    # -- to override ----------------------------------------------------------------------
    def _build(self, dim: int, n_out: int) -> nn.Module:
        raise NotImplementedError

    # -- fit / predict --------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> "BaseTuner":
        """Fit on features (N, D) or (N, K, D) as numpy or torch with labels ``y``, or on
        an open store (labels from the store). A store whose features do not fit in
        memory is streamed chunk by chunk (``stream="auto"``)."""
        from featstore.tuners.batches import ChunkStream, in_memory_batches, should_stream

        self._validate_params()
        stream = _is_store(X) and should_stream(X, self.stream)
        if stream:
            store = X
            key = _store_backbone_key(store)
            if y is None:
                if store.labels is None:
                    raise DataError(f"{store.path} has no labels; pass y, or extract a labelled split.")
                y = store.labels[store.valid]
            y = np.asarray(y)
            dim = store.n_features
        else:
            X, y, key = as_arrays(X, y)
            dim = X.shape[-1]
        if y is None:
            raise DataError("fit needs labels: pass y, or a store with labels.")
        task = self.task
        if task == "auto":
            task = "classification" if y.dtype.kind in "iub" else "regression"
        self.task_ = task
        if task == "classification":
            self.classes_, y_idx = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise DataError(f"Expected at least 2 classes in y, got {len(self.classes_)}.")
            target = torch.from_numpy(y_idx.astype(np.int64))
            n_out = len(self.classes_)
        else:
            target = torch.from_numpy(y.astype(np.float32))
            n_out = 1
        self.n_features_in_ = dim
        self.backbone_key_ = key
        device = resolve_device(self.device)
        if self.random_state is not None:
            torch.manual_seed(self.random_state)
        model = self._build(dim, n_out).to(device)
        if stream:
            if len(y) != int(store.valid.sum()):
                raise DataError(f"Expected {int(store.valid.sum())} labels (one per valid row of "
                                f"{store.path}), got {len(y)}.")
            n = int(store.valid.sum())
            source = ChunkStream(store, target, min(self.batch_size, n))
            epoch_batches = source.epoch
        else:
            Xd, yd = torch.from_numpy(X).to(device), target.to(device)
            n = len(X)

            def epoch_batches(gen, device):
                return in_memory_batches(Xd, yd, min(self.batch_size, n), gen, device)
        self.streamed_ = stream
        self.history_ = self._train(model, n, epoch_batches, device)
        self.model_ = model.eval()
        return self

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
        """``fn`` (tensor -> tensor) over the features of X, chunk by chunk for a store
        that is streamed; returns numpy."""
        from featstore.tuners.batches import iter_store_rows, should_stream

        self._check_fitted()
        if _is_store(X) and should_stream(X, self.stream):
            self.check_backbone(_store_backbone_key(X))
            blocks = iter_store_rows(X)
        else:
            X, _, key = as_arrays(X)
            self.check_backbone(key)
            blocks = iter([X])
        device = next(self.model_.parameters()).device
        out = []
        with torch.inference_mode():
            for x in blocks:
                if x.ndim == 3:
                    x = x[:, 0]
                if x.shape[1] != self.n_features_in_:
                    raise DataError(f"Expected {self.n_features_in_} features, got {x.shape[1]}.")
                out.append(fn(torch.from_numpy(np.ascontiguousarray(x)).to(device)).cpu().numpy())
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
        """The tuned features z (for LP: the input features)."""
        return self._apply(X, self._z)

    def decision_function(self, X: Any) -> np.ndarray:
        return self._apply(X, lambda f: self.model_.head(self._z(f)))

    def predict_proba(self, X: Any) -> np.ndarray:
        if self.task_ != "classification":
            raise ConfigError("predict_proba is for classification tuners.")
        return torch.softmax(torch.from_numpy(self.decision_function(X)), -1).numpy()

    def predict(self, X: Any) -> np.ndarray:
        out = self.decision_function(X)
        if self.task_ == "classification":
            return self.classes_[out.argmax(1)]
        return out[:, 0]

    def score(self, X: Any, y: Any = None) -> float:
        Xa, ya, _ = as_arrays(X, y)
        pred = self.predict(Xa)
        if self.task_ == "classification":
            return float((pred == ya).mean())
        from scipy.stats import pearsonr

        return float(pearsonr(pred, ya)[0])

    # -- persistence ----------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``PATH.safetensors`` (weights) and ``PATH.json`` (params, classes, key),
        each whole or not at all; the .json, which :meth:`load` reads first, last."""
        from safetensors.torch import save

        self._check_fitted()
        path = Path(path)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model_.state_dict().items()}
        atomic_write(path.with_suffix(".safetensors"), save(state))
        meta = {"tuner": type(self).__name__, "params": self.get_params(), "task": self.task_,
                "classes": self.classes_.tolist() if self.task_ == "classification" else None,
                "n_features_in": self.n_features_in_, "backbone_key": self.backbone_key_}
        atomic_write(path.with_suffix(".json"), json.dumps(meta, indent=2, default=str))
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
