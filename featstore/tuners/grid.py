"""Many heads in one pass over the data, as DINOv2's linear evaluation trains its grid.

:func:`fit_grid` fits a list of tuners. Heads that share a *pass* (the same data, epochs,
batch size, task, device, stream mode and data order) read each mini-batch once, and
the batch feeds all of them: heads of one architecture and one loss configuration are
*stacked* (``torch.func.stack_module_state``) and evaluated together with
``torch.vmap`` over ``functional_call``, so K linear probes are one batched matmul, and
one AdamW step updates all K with per-head learning rates and weight decays.

Seeds. A solo ``fit`` seeds both the initialisation and the data order with
``random_state``. In a grid, ``random_state`` still seeds each head's initialisation
(``torch.manual_seed(random_state)`` before ``_build``, exactly as ``fit`` does);
the data order is seeded by ``data_seed`` when given (then every head shares one pass
whatever its ``random_state``: seeds change only the initialisation), and by each
head's ``random_state`` otherwise (then each seed is its own pass, and every head
equals its solo ``fit`` to float rounding).

What a stack shares: the network's parameter names and shapes, and every
hyperparameter except ``lr``, ``weight_decay``, ``schedule`` and ``random_state``
(which are per head). Heads that differ in another hyperparameter (NMTune's λ, MLP
``hidden`` ...) form separate stacks of the same pass: still one read of each batch,
and each head's loss is exactly its own ``_batch_loss``. A loss that ``vmap`` cannot
express (today: NMTune's custom autograd function for its Gram terms), and networks
with BatchNorm (see ``_Stack``), fall back to a loop over the heads of the stack for
every batch: still one pass over the data, one optimiser step, but not one batched
matmul. ``stack_mode_`` on each head records which was used ("vmap" or "loop").
"""

from __future__ import annotations

import copy
import logging
import math
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from featstore.errors import ConfigError
from featstore.tuners.base import BaseTuner
from featstore.tuners.inputs import is_store

log = logging.getLogger(__name__)

#: Hyperparameters that may differ between heads of one stack.
PER_HEAD = frozenset({"lr", "weight_decay", "schedule", "random_state"})
#: Hyperparameters that must be equal for heads to share a pass over the data.
PER_PASS = ("epochs", "batch_size", "device", "stream")

BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: torch.optim.AdamW's defaults, which the solo loop uses.
BETAS, EPS = (0.9, 0.999), 1e-8

SCHEDULES: dict[str, Callable[[int, int], float]] = {
    "cosine": lambda s, total: 0.5 * (1 + math.cos(math.pi * s / total)),
    "linear": lambda s, total: 1 - s / total,
    "constant": lambda s, total: 1.0,
}


def schedule_factor(schedule: str, step: int, total: int) -> float:
    """The learning-rate multiplier at ``step`` (0-based) of ``total``, as the solo
    loop's ``LambdaLR`` computes it."""
    return SCHEDULES[schedule](step, total)


class _Captured(Exception):
    """Raised by the stand-in for ``_train`` to stop ``fit`` after its set-up."""


def _prepare(est: BaseTuner, X: Any, y: Any) -> dict[str, Any]:
    """Run ``est.fit``'s own set-up (validation, task and classes, targets, the model
    built after ``torch.manual_seed(random_state)``, the batch source) and stop before
    training: the grid trains the model, then fills in what ``fit`` would have.

    The estimator's ``_train`` is shadowed for the call only, so the set-up is the
    estimator's own code, not a copy that could drift from it.
    """
    got: dict[str, Any] = {}

    def capture(model: nn.Module, n: int, epoch_batches: Any, device: torch.device) -> Any:
        got.update(model=model, n=n, epoch_batches=epoch_batches, device=device)
        raise _Captured

    est._train = capture  # type: ignore[method-assign]
    try:
        est.fit(X, y)
    except _Captured:
        pass
    finally:
        del est._train
    if not got:  # pragma: no cover - fit changed so that it no longer calls _train
        raise RuntimeError(f"{type(est).__name__}.fit did not reach _train.")
    return got


class _FunctionalNet:
    """A stand-in for the estimator's network whose ``tuner``/``head`` run on given
    tensors (one head's slice inside ``vmap``) through ``functional_call``."""

    def __init__(self, base: nn.Module, state: dict[str, torch.Tensor]):
        for part in ("tuner", "head"):
            if hasattr(base, part):
                sub = {k[len(part) + 1:]: v for k, v in state.items() if k.startswith(part + ".")}
                setattr(self, part, self._call(getattr(base, part), sub))

    @staticmethod
    def _call(module: nn.Module, state: dict[str, torch.Tensor]) -> Callable[..., torch.Tensor]:
        from torch.func import functional_call

        return lambda x: functional_call(module, state, (x,))


class _Stack:
    """K heads of one architecture and loss: stacked parameters, a batched loss and a
    stacked AdamW (torch.optim.AdamW's update, per-head lr and weight decay)."""

    def __init__(self, heads: list[BaseTuner], models: list[nn.Module], total: int):
        from torch.func import stack_module_state

        self.heads, self.models, self.total = heads, models, total
        self.params, self.buffers = stack_module_state(models)
        self.base = copy.deepcopy(models[0]).to("meta").train()
        self.exp_avg = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(p) for k, p in self.params.items()}
        # "vmap" once a batch went through vmap, else "loop". BatchNorm trains in a loop:
        # vmap computes it to float rounding only, and the bias of the Linear layer
        # before a BatchNorm has a true gradient of 0, so AdamW's normalised step turns
        # that rounding into updates of size lr: the head would not equal its solo fit.
        self.mode = "loop" if any(isinstance(m, BATCHNORMS) for m in models[0].modules()) else "try"
        self.loss_sum = torch.zeros(len(heads))

    def _one(self, params: dict, buffers: dict, xb: torch.Tensor, yb: torch.Tensor
             ) -> torch.Tensor:
        # every head of the stack has the same loss configuration: heads[0]'s loss is theirs
        return self.heads[0]._batch_loss(_FunctionalNet(self.base, {**params, **buffers}), xb, yb)

    def losses(self, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        """The K losses of one batch, shape (K,)."""
        from torch.func import vmap

        if self.mode in ("vmap", "try"):
            # the first batch may fail part-way, after BatchNorm updated its running
            # statistics: keep them to restore
            saved = ({n: b.clone() for n, b in self.buffers.items()} if self.mode == "try"
                     else None)
            try:
                out = vmap(self._one, in_dims=(0, 0, None, None))(self.params, self.buffers, xb, yb)
                self.mode = "vmap"
                return out
            except RuntimeError as err:  # e.g. a custom autograd.Function without a vmap rule
                if saved is None:
                    raise
                with torch.no_grad():
                    for n, b in self.buffers.items():
                        b.copy_(saved[n])
                log.info("vmap cannot express %s's loss (%s); training its %d heads in a "
                            "loop per batch (still one pass over the data).",
                            type(self.heads[0]).__name__, str(err).splitlines()[0], len(self.heads))
                self.mode = "loop"
        return torch.stack([
            self.heads[k]._batch_loss(_FunctionalNet(self.base, {
                **{n: p[k] for n, p in self.params.items()},
                **{n: b[k] for n, b in self.buffers.items()}}), xb, yb)
            for k in range(len(self.heads))])

    @torch.no_grad()
    def step(self, s: int) -> None:
        """One AdamW step (0-based ``s``) for every head, as torch.optim.AdamW's
        single-tensor update computes it, with each head's lr·schedule(s) and weight decay."""
        beta1, beta2 = BETAS
        lrs = [h.lr * schedule_factor(h.schedule, s, self.total) for h in self.heads]
        t = s + 1
        bc1, bc2_sqrt = 1 - beta1 ** t, (1 - beta2 ** t) ** 0.5
        device = next(iter(self.params.values())).device
        # Python doubles rounded to float32, as a tensor-by-Python-scalar op rounds them
        decay = torch.tensor([1 - lr * h.weight_decay for lr, h in zip(lrs, self.heads)],
                             dtype=torch.float32, device=device)
        neg_step = torch.tensor([-(lr / bc1) for lr in lrs], dtype=torch.float32, device=device)
        for name, p in self.params.items():
            g, m, v = p.grad, self.exp_avg[name], self.exp_avg_sq[name]
            shape = (len(self.heads),) + (1,) * (p.ndim - 1)
            p.mul_(decay.view(shape))
            m.lerp_(g, 1 - beta1)
            v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
            denom = (v.sqrt() / bc2_sqrt).add_(EPS)
            p.add_((neg_step.view(shape) * m) / denom)  # addcdiv_: p + (value·m)/denom
            p.grad = None

    @torch.no_grad()
    def unstack(self) -> None:
        """Copy each head's slice back into its own module."""
        for k, model in enumerate(self.models):
            state = model.state_dict()
            for name, t in {**self.params, **self.buffers}.items():
                state[name].copy_(t[k])


def _stack_key(est: BaseTuner, model: nn.Module) -> tuple:
    shapes = tuple((k, tuple(v.shape), str(v.dtype)) for k, v in model.state_dict().items())
    params = tuple(sorted((k, repr(v)) for k, v in est.get_params().items() if k not in PER_HEAD))
    return type(est), shapes, params


def _pass_key(est: BaseTuner, prep: dict[str, Any], data_seed: int | None) -> tuple:
    seed = data_seed if data_seed is not None else (est.random_state or 0)
    classes = tuple(est.classes_.tolist()) if getattr(est, "classes_", None) is not None else None
    return (tuple(repr(getattr(est, p)) for p in PER_PASS), str(prep["device"]), prep["n"],
            est.task_, classes, seed)


def _train_pass(heads: list[BaseTuner], preps: list[dict[str, Any]], seed: int) -> None:
    """Train ``heads`` (one pass key) together: one read of every batch for all."""
    first = preps[0]
    n, device, epochs = first["n"], first["device"], heads[0].epochs
    total = epochs * (n // min(heads[0].batch_size, n))
    groups: dict[tuple, list[int]] = {}
    for i, (h, p) in enumerate(zip(heads, preps)):
        groups.setdefault(_stack_key(h, p["model"]), []).append(i)
    stacks = [_Stack([heads[i] for i in idx], [preps[i]["model"] for i in idx], total)
              for idx in groups.values()]
    gen = torch.Generator().manual_seed(seed)
    history: list[list[dict[str, float]]] = [[] for _ in heads]
    step = 0
    for epoch in range(epochs):
        t0 = time.perf_counter()
        for st in stacks:
            st.loss_sum = torch.zeros(len(st.heads), device=device)
        for xb, yb in first["epoch_batches"](gen, device):
            # heads are independent: the gradient of the sum w.r.t. head k's parameters
            # is the gradient of head k's own loss
            losses = [st.losses(xb, yb) for st in stacks]
            torch.stack([lk.sum() for lk in losses]).sum().backward()
            for st, lk in zip(stacks, losses):
                st.step(step)
                st.loss_sum += lk.detach()
            step += 1
        seconds = time.perf_counter() - t0
        per_epoch = max(n // min(heads[0].batch_size, n), 1)
        for st, idx in zip(stacks, groups.values()):
            for k, i in enumerate(idx):
                history[i].append({"epoch": epoch + 1, "loss": float(st.loss_sum[k]) / per_epoch,
                                   "seconds": seconds})
    for st, idx in zip(stacks, groups.values()):
        st.unstack()
        for i in idx:
            heads[i].history_ = history[i]
            heads[i].model_ = preps[i]["model"].eval()
            heads[i].stack_mode_ = st.mode
            heads[i].stack_size_ = len(idx)


def fit_grid(estimators: Sequence[Any], X: Any, y: Any = None, *,
             data_seed: int | None = None) -> list[Any]:
    """Fit every estimator on ``(X, y)`` and return them (fitted in place).

    Tuners (:class:`~featstore.tuners.base.BaseTuner`) that share a pass are trained
    together (see the module docstring); anything else (``LogRegBaseline``) is fitted
    alone. ``data_seed``: the seed of the data order of every pass (None: each head's
    ``random_state``, as a solo ``fit``). A store is loaded once and shared, or
    streamed chunk by chunk when it does not fit in memory (``stream``), one stream
    per pass.

    Examples
    --------
    >>> import numpy as np
    >>> from featstore.tuners import LinearProbe
    >>> from featstore.tuners.grid import fit_grid
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 16)).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> heads = [LinearProbe(lr=lr, epochs=5, random_state=0) for lr in (0.01, 0.1)]
    >>> [round(h.score(X, y), 2) > 0.8 for h in fit_grid(heads, X, y)]
    [True, True]
    """
    if data_seed is not None and (isinstance(data_seed, bool) or not isinstance(data_seed, int)
                                  or data_seed < 0):
        raise ConfigError(f"The 'data_seed' parameter of fit_grid must be an int in [0, inf) or "
                          f"None. Got {data_seed!r} instead.")
    estimators = list(estimators)
    tuners = [e for e in estimators if isinstance(e, BaseTuner)]
    for e in estimators:
        if not isinstance(e, BaseTuner):
            e.fit(X, y)
    if not tuners:
        return estimators
    if is_store(X) and _in_memory(X, tuners):
        X = _LoadedOnce(X)  # every head's fit reads the store's features from one load
    passes: dict[tuple, tuple[list[BaseTuner], list[dict[str, Any]]]] = {}
    for est in tuners:
        prep = _prepare(est, X, y)
        pk = _pass_key(est, prep, data_seed)
        heads, preps = passes.setdefault(pk, ([], []))
        if preps:  # only the first head's batch source is used: let the others go
            prep["epoch_batches"] = None
        heads.append(est)
        preps.append(prep)
    for pk, (heads, preps) in passes.items():
        _train_pass(heads, preps, pk[-1])
        for h in heads:
            h.data_seed_ = pk[-1]
    return estimators


def _in_memory(store: Any, tuners: list[BaseTuner]) -> bool:
    """No head would stream ``store``: each would load it into memory."""
    from featstore.tuners.batches import should_stream

    return not any(should_stream(store, t.stream) for t in tuners)


class _LoadedOnce:
    """An open store whose features are read from disk once however many heads load
    them; everything else (labels, metadata, the recorded task) is the store's."""

    def __init__(self, store: Any):
        self._store = store
        self._loaded: dict[Any, np.ndarray] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def load_features(self, dtype: Any = None) -> np.ndarray:
        if dtype not in self._loaded:
            self._loaded[dtype] = self._store.load_features(dtype=dtype)
        return self._loaded[dtype]
