"""Linear probe, MLP tuning and NMTune (docs/tune.md: the method and its options)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from featstore.tuners.base import BaseTuner
from featstore.tuners.heads import ACTIVATIONS, TunerMLP
from featstore.tuners.regularizers import (consistency_loss, covariance_and_singular_value_loss,
                                           covariance_loss, singular_value_loss)
from featstore.utils.validation import INF, Boolean, Interval, Options, OrNone


class _Net(nn.Module):
    def __init__(self, tuner: nn.Module | None, head: nn.Module):
        super().__init__()
        if tuner is not None:
            self.tuner = tuner
        self.head = head


class LinearProbe(BaseTuner):
    """A linear classifier on the frozen features (LP).

    Examples
    --------
    >>> import numpy as np
    >>> from featstore.tuners import LinearProbe
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> LinearProbe(epochs=20, lr=0.05).fit(X, y).score(X, y) > 0.9
    True
    """

    def __init__(self, *, lr: float = 0.01, weight_decay: float = 1e-4, epochs: int = 30,
                 batch_size: int = 64, schedule: str = "cosine", task: str = "auto",
                 device: str = "auto", stream: str = "auto", random_state: int | None = 0):
        super().__init__(lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                         schedule=schedule, task=task, device=device, stream=stream,
                         random_state=random_state)

    def _build(self, dim: int, n_out: int) -> nn.Module:
        return _Net(None, nn.Linear(dim, n_out))


class MLPTuner(BaseTuner):
    """MLP tuning: z = MLP(f), a linear classifier on z, cross-entropy only.

    ``hidden`` defaults to D (the paper); the authors' code variant uses 4·D with
    BatchNorm and a residual z = s ⊙ MLP(f) + f (``residual=True``).
    """

    _constraints = {
        "depth": Interval(int, 1, INF, "left"),
        "hidden": OrNone(Interval(int, 1, INF, "left")),  # None: D, the features' width
        "activation": Options(*ACTIVATIONS),
        "batchnorm": Boolean(),
        "residual": Boolean(),
        "residual_init": Interval(float, -INF, INF, "neither"),
    }

    def __init__(self, *, depth: int = 2, hidden: int | None = None, activation: str = "relu",
                 batchnorm: bool = False, residual: bool = False, residual_init: float = 1.0,
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30,
                 batch_size: int = 64, schedule: str = "cosine", task: str = "auto",
                 device: str = "auto", stream: str = "auto", random_state: int | None = 0):
        super().__init__(lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                         schedule=schedule, task=task, device=device, stream=stream,
                         random_state=random_state)
        self.depth, self.hidden, self.activation = depth, hidden, activation
        self.batchnorm, self.residual, self.residual_init = batchnorm, residual, residual_init

    def _build(self, dim: int, n_out: int) -> nn.Module:
        mlp = TunerMLP(dim, hidden=self.hidden or dim, depth=self.depth, activation=self.activation,
                       batchnorm=self.batchnorm, residual=self.residual,
                       residual_init=self.residual_init)
        return _Net(mlp, nn.Linear(dim, n_out))

    def _batch_loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if xb.ndim == 3:  # K cached views: each is a training input
            xb, yb = xb.flatten(0, 1), yb.repeat_interleave(xb.shape[1])
        return self._supervised(model, model.tuner(xb), yb)

    def _supervised(self, model: nn.Module, z: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        out = model.head(z)
        if self.task_ == "classification":
            return nn.functional.cross_entropy(out, yb)
        return nn.functional.mse_loss(out.squeeze(-1), yb)


class NMTune(MLPTuner):
    """NMTune: MLP tuning with consistency, covariance and dominant-singular-value terms.

    L = L_CE + λ_mse·L_MSE + λ_cov·L_COV + λ_svd·L_SVD (paper: 0.01 each, top-1).
    The authors' code variant: ``lambda_mse=1.0, lambda_cov=0.04, lambda_svd=0.001,
    svd_top_k=5, hidden=4*D, batchnorm=True, residual=True``. With K ≥ 2 cached views,
    both views go through tuner and classifier and the consistency term compares view
    2's z with view 1's frozen f; with one view it compares z and f of the same sample.
    """

    _constraints = {
        "lambda_mse": Interval(float, 0, INF, "left"),
        "lambda_cov": Interval(float, 0, INF, "left"),
        "lambda_svd": Interval(float, 0, INF, "left"),
        "svd_top_k": Interval(int, 1, INF, "left"),
    }

    def __init__(self, *, lambda_mse: float = 0.01, lambda_cov: float = 0.01,
                 lambda_svd: float = 0.01, svd_top_k: int = 1, **kwargs: Any):
        super().__init__(**kwargs)
        self.lambda_mse, self.lambda_cov = lambda_mse, lambda_cov
        self.lambda_svd, self.svd_top_k = lambda_svd, svd_top_k

    @classmethod
    def authors_variant(cls, dim: int, **kwargs: Any) -> "NMTune":
        return cls(lambda_mse=1.0, lambda_cov=0.04, lambda_svd=0.001, svd_top_k=5,
                   hidden=4 * dim, batchnorm=True, residual=True, **kwargs)

    def _batch_loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if xb.ndim == 3 and xb.shape[1] >= 2:
            f1, f2 = xb[:, 0], xb[:, 1]
            z1, z2 = model.tuner(f1), model.tuner(f2)
            sup = self._supervised(model, torch.cat([z1, z2]), torch.cat([yb, yb]))
            z, mse = z1, consistency_loss(z2, f1)
        else:
            f = xb[:, 0] if xb.ndim == 3 else xb
            z = model.tuner(f)
            sup = self._supervised(model, z, yb)
            mse = consistency_loss(z, f)
        loss = sup + self.lambda_mse * mse
        if self.lambda_cov and self.lambda_svd:  # one shared Gram matrix for both terms
            cov, svd = covariance_and_singular_value_loss(z, self.svd_top_k)
            return loss + self.lambda_cov * cov + self.lambda_svd * svd
        if self.lambda_cov:
            loss = loss + self.lambda_cov * covariance_loss(z)
        if self.lambda_svd:
            loss = loss + self.lambda_svd * singular_value_loss(z, self.svd_top_k)
        return loss
