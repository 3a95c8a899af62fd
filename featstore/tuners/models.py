"""Linear probe, MLP tuning and NMTune (docs/tune.md: the method and its options)."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import torch
from sklearn.utils._param_validation import Interval
from torch import nn

from featstore.tuners.base import BaseTuner
from featstore.tuners.checks import choices
from featstore.tuners.heads import ACTIVATIONS, CLASSIFIER_INITS, TunerMLP, make_classifier
from featstore.tuners.regularizers import (REDUCTIONS, consistency_loss,
                                           covariance_and_singular_value_loss, covariance_loss,
                                           singular_value_loss)


class _Net(nn.Module):
    def __init__(self, tuner: nn.Module | None, head: nn.Module):
        super().__init__()
        if tuner is not None:
            self.tuner = tuner
        self.head = head


class LinearProbe(BaseTuner):
    """A linear classifier (or, with ``task="regression"``, regressor) on the frozen
    features (LP). Parameters: see :class:`~featstore.tuners.base.BaseTuner`.

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
    BatchNorm and a residual z = s ⊙ MLP(f) + f (``residual=True``). The training
    parameters (``lr`` ... ``random_state``) are :class:`~featstore.tuners.base.BaseTuner`'s.
    """

    _parameter_constraints: dict[str, list[Any]] = {
        **BaseTuner._parameter_constraints,
        "depth": [Interval(Integral, 1, None, closed="left")],
        "hidden": [Interval(Integral, 1, None, closed="left"), None],  # None: D, the features' width
        "activation": [choices(*ACTIVATIONS)],
        "batchnorm": ["boolean"],
        "residual": ["boolean"],
        "residual_init": [Interval(Real, None, None, closed="neither")],
        "classifier_init": [choices(*CLASSIFIER_INITS)],
    }

    def __init__(self, *, depth: int = 2, hidden: int | None = None, activation: str = "relu",
                 batchnorm: bool = False, residual: bool = False, residual_init: float = 1.0,
                 classifier_init: str = "torch",
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30,
                 batch_size: int = 64, schedule: str = "cosine", task: str = "auto",
                 device: str = "auto", stream: str = "auto", random_state: int | None = 0):
        super().__init__(lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                         schedule=schedule, task=task, device=device, stream=stream,
                         random_state=random_state)
        self.depth = depth
        self.hidden = hidden
        self.activation = activation
        self.batchnorm = batchnorm
        self.residual = residual
        self.residual_init = residual_init
        self.classifier_init = classifier_init

    def _build(self, dim: int, n_out: int) -> nn.Module:
        mlp = TunerMLP(dim, hidden=self.hidden or dim, depth=self.depth, activation=self.activation,
                       batchnorm=self.batchnorm, residual=self.residual,
                       residual_init=self.residual_init)
        return _Net(mlp, make_classifier(dim, n_out, self.classifier_init))

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
    svd_top_k=5, consistency_reduction="element", hidden=4*D, batchnorm=True,
    residual=True, residual_init=0.5, classifier_init="kaiming-uniform"``
    (:meth:`authors_variant`). With K ≥ 2 cached views (the first two are used), both
    views' 2B rows go through tuner and classifier in one batch, the covariance and
    singular-value terms run over those 2B rows, and the consistency term compares view
    2's z with view 1's frozen f; with one view it compares z and f of the same sample.
    ``consistency_reduction``: "per-sample" (the paper) or "element" (the authors'
    MSELoss, 1/D of it).
    The network parameters (``depth`` ... ``residual_init``) are :class:`MLPTuner`'s,
    the training parameters :class:`~featstore.tuners.base.BaseTuner`'s.
    """

    # NMTune's own parameters: a new one goes here, in __init__'s signature and body.
    _parameter_constraints: dict[str, list[Any]] = {
        **MLPTuner._parameter_constraints,
        "lambda_mse": [Interval(Real, 0, None, closed="left")],
        "lambda_cov": [Interval(Real, 0, None, closed="left")],
        "lambda_svd": [Interval(Real, 0, None, closed="left")],
        "svd_top_k": [Interval(Integral, 1, None, closed="left")],
        "consistency_reduction": [choices(*REDUCTIONS)],
    }

    def __init__(self, *, lambda_mse: float = 0.01, lambda_cov: float = 0.01,
                 lambda_svd: float = 0.01, svd_top_k: int = 1,
                 consistency_reduction: str = "per-sample",
                 depth: int = 2, hidden: int | None = None, activation: str = "relu",
                 batchnorm: bool = False, residual: bool = False, residual_init: float = 1.0,
                 classifier_init: str = "torch",
                 lr: float = 1e-3, weight_decay: float = 1e-4, epochs: int = 30,
                 batch_size: int = 64, schedule: str = "cosine", task: str = "auto",
                 device: str = "auto", stream: str = "auto", random_state: int | None = 0):
        super().__init__(depth=depth, hidden=hidden, activation=activation, batchnorm=batchnorm,
                         residual=residual, residual_init=residual_init,
                         classifier_init=classifier_init, lr=lr,
                         weight_decay=weight_decay, epochs=epochs, batch_size=batch_size,
                         schedule=schedule, task=task, device=device, stream=stream,
                         random_state=random_state)
        self.lambda_mse = lambda_mse
        self.lambda_cov = lambda_cov
        self.lambda_svd = lambda_svd
        self.svd_top_k = svd_top_k
        self.consistency_reduction = consistency_reduction

    @classmethod
    def authors_variant(cls, dim: int, **params: Any) -> "NMTune":
        """NMTune as in the authors' code, for ``dim``-dimensional features; ``params``:
        any other parameter of NMTune (``lr``, ``epochs``, ...), or one of theirs to change.

        Their loss: weights 1.0 / 0.04 / 0.001, top-5, and the consistency term as
        ``torch.nn.MSELoss`` computes it (``consistency_reduction="element"``, the mean
        over all B·D elements; 1.0 on the paper's per-sample form would be D times too
        strong). Their network: H = 4·D, BatchNorm, residual z = s ⊙ MLP(f) + f with s
        starting at 0.5 — the default argument of their code, which is what runs unless
        their script is told otherwise; their README states 1.0, available as
        ``residual_init=1.0`` — and the classifier initialised Kaiming-uniform with a
        zero bias (``classifier_init="kaiming-uniform"``; ``"torch"`` for nn.Linear's own).
        """
        authors = dict(lambda_mse=1.0, lambda_cov=0.04, lambda_svd=0.001, svd_top_k=5,
                       consistency_reduction="element", hidden=4 * dim, batchnorm=True,
                       residual=True, residual_init=0.5, classifier_init="kaiming-uniform")
        return cls(**{**authors, **params})

    def _batch_loss(self, model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if xb.ndim == 3 and xb.shape[1] >= 2:
            # as the authors train two views: one tuner call on both views' 2B rows (so
            # BatchNorm normalises the 2B batch), cross-entropy and the spectral terms over
            # all 2B rows, consistency of view 2's z with view 1's frozen f
            b = xb.shape[0]
            f1 = xb[:, 0]
            z = model.tuner(torch.cat([f1, xb[:, 1]]))
            sup = self._supervised(model, z, torch.cat([yb, yb]))
            mse = consistency_loss(z[b:], f1, self.consistency_reduction)
        else:
            f = xb[:, 0] if xb.ndim == 3 else xb
            z = model.tuner(f)
            sup = self._supervised(model, z, yb)
            mse = consistency_loss(z, f, self.consistency_reduction)
        loss = sup + self.lambda_mse * mse
        if self.lambda_cov and self.lambda_svd:  # one shared Gram matrix for both terms
            cov, svd = covariance_and_singular_value_loss(z, self.svd_top_k)
            return loss + self.lambda_cov * cov + self.lambda_svd * svd
        if self.lambda_cov:
            loss = loss + self.lambda_cov * covariance_loss(z)
        if self.lambda_svd:
            loss = loss + self.lambda_svd * singular_value_loss(z, self.svd_top_k)
        return loss
