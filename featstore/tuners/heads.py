"""The networks tuners train: a linear classifier, and NMTune's MLP (docs/tune.md)."""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "identity": nn.Identity}
#: How the linear classifier's weights start: "torch" (nn.Linear's own: Kaiming-uniform
#: with a = √5, i.e. U(±1/√fan_in), and a uniform bias) or "kaiming-uniform" (the
#: authors' code: ``nn.init.kaiming_uniform_`` with its defaults, U(±√(6/fan_in)), and a
#: zero bias).
CLASSIFIER_INITS = ("torch", "kaiming-uniform")


def make_classifier(dim: int, n_out: int, init: str = "torch") -> nn.Linear:
    """The linear classifier on (tuned) features, initialised as ``init`` says."""
    if init not in CLASSIFIER_INITS:
        raise ValueError(f"Expected a classifier init in {CLASSIFIER_INITS}; got {init!r}.")
    head = nn.Linear(dim, n_out)
    if init == "kaiming-uniform":
        nn.init.kaiming_uniform_(head.weight)
        nn.init.zeros_(head.bias)
    return head


class TunerMLP(nn.Module):
    """z = MLP(f), or z = s ⊙ MLP(f) + f with a learnable per-dimension scale s.

    ``depth`` Linear layers (D→H, [H→H ...], H→D) with ``activation`` (and BatchNorm)
    between them. The paper's default: depth 2, H = D, ReLU, no BatchNorm, no residual.
    ``residual_init`` is s's starting value (the authors' README says 1.0, the default
    argument of their code 0.5; :meth:`NMTune.authors_variant` uses 0.5).
    """

    def __init__(self, dim: int, *, hidden: int, depth: int = 2, activation: str = "relu",
                 batchnorm: bool = False, residual: bool = False, residual_init: float = 1.0):
        super().__init__()
        widths = [dim] + [hidden] * (depth - 1) + [dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(a, b))
            if i < depth - 1:
                if batchnorm:
                    layers.append(nn.BatchNorm1d(b))
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.scale = nn.Parameter(torch.full((dim,), float(residual_init))) if residual else None

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        z = self.net(f)
        return z * self.scale + f if self.scale is not None else z
