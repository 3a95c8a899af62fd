"""NMTune's total training objective against an independent transcription of the
formulas in the method notes (../shared/docs/method.md §2), written here with plain
torch ops, in float64: the paper's form and the authors' code's form, on one view and
on two cached views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from featstore.tuners import NMTune

B, D, C = 12, 10, 3


def _mlp(p: dict, f: torch.Tensor, batchnorm: bool, residual: bool) -> torch.Tensor:
    """Linear D→H, [BatchNorm on this batch's statistics], ReLU, Linear H→D, [s ⊙ · + f]."""
    h = f @ p["tuner.net.0.weight"].T + p["tuner.net.0.bias"]
    last = "tuner.net.2" if not batchnorm else "tuner.net.3"
    if batchnorm:
        mean, var = h.mean(0), h.var(0, unbiased=False)
        h = (h - mean) / torch.sqrt(var + 1e-5) * p["tuner.net.1.weight"] + p["tuner.net.1.bias"]
    h = torch.clamp(h, min=0)
    z = h @ p[f"{last}.weight"].T + p[f"{last}.bias"]
    return z * p["tuner.scale"] + f if residual else z


def _objective(p, views, y, *, lam, k, element, batchnorm, residual):
    """L = CE + λ_mse·L_MSE + λ_cov·L_COV + λ_svd·L_SVD as method.md states it."""
    if views.shape[1] >= 2:  # both views' rows as one 2B batch; view 2's z against view 1's f
        f_all = torch.cat([views[:, 0], views[:, 1]])
        target = torch.cat([y, y])
        z = _mlp(p, f_all, batchnorm, residual)
        z_cons, f_cons = z[len(y):], views[:, 0]
    else:
        f_all, target = views[:, 0], y
        z = _mlp(p, f_all, batchnorm, residual)
        z_cons, f_cons = z, f_all
    logits = z @ p["head.weight"].T + p["head.bias"]
    logp = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    ce = -logp[torch.arange(len(target)), target].mean()
    zn = z_cons / torch.sqrt((z_cons ** 2).sum(1, keepdim=True))
    fn = f_cons / torch.sqrt((f_cons ** 2).sum(1, keepdim=True))
    sq = (zn - fn) ** 2
    mse = sq.mean() if element else sq.sum(1).mean()          # MSELoss vs the paper's form
    n, d = z.shape
    zc = z - z.mean(0)
    cov_m = zc.T @ zc / (n - 1)
    cov = (cov_m ** 2).sum() - (torch.diagonal(cov_m) ** 2).sum()
    cov = cov / d
    sigma = torch.linalg.svdvals(z)                           # full SVD, uncentred
    svd = -(sigma[:k] / sigma.sum()).mean()
    return ce + lam[0] * mse + lam[1] * cov + lam[2] * svd


def _fixture(k_views: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    views = torch.randn(B, k_views, D, generator=g, dtype=torch.float64).abs() + 0.2
    y = torch.randint(0, C, (B,), generator=g)
    return views, y


VARIANTS = {
    "paper": (lambda: NMTune(), dict(lam=(0.01, 0.01, 0.01), k=1, element=False,
                                     batchnorm=False, residual=False)),
    "authors": (lambda: NMTune.authors_variant(D), dict(lam=(1.0, 0.04, 0.001), k=5,
                                                        element=True, batchnorm=True,
                                                        residual=True)),
}


@pytest.mark.parametrize("k_views", [1, 2])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_total_objective_matches_the_transcribed_formula(variant, k_views):
    make, form = VARIANTS[variant]
    est = make()
    est.task_ = "classification"
    torch.manual_seed(0)
    model = est._build(D, C).double().train()
    with torch.no_grad():  # a residual scale away from its start, so that s matters
        if hasattr(model.tuner, "scale") and model.tuner.scale is not None:
            model.tuner.scale.uniform_(0.3, 1.2)
    views, y = _fixture(k_views, seed=k_views)
    xb = views if k_views > 1 else views[:, 0]
    loss = est._batch_loss(model, xb, y)
    loss.backward()
    ours = {n: q.grad.clone() for n, q in model.named_parameters()}

    params = {n: q.detach().clone().requires_grad_(True) for n, q in model.named_parameters()}
    ref = _objective(params, views, y, **form)
    ref.backward()
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-10, atol=1e-12)
    for name, grad in ours.items():
        torch.testing.assert_close(grad, params[name].grad, rtol=1e-8, atol=1e-10, msg=name)


def test_authors_consistency_term_is_the_element_mean():
    """The authors' λ_mse = 1.0 weighs the element mean (1/D of the paper's form): the
    two variants' objectives differ by exactly (1 − 1/D)·L_MSE when only it is on."""
    views, y = _fixture(1, seed=5)
    f = views[:, 0]
    losses = {}
    for red in ("per-sample", "element"):
        est = NMTune(lambda_mse=1.0, lambda_cov=0.0, lambda_svd=0.0, consistency_reduction=red)
        est.task_ = "classification"
        torch.manual_seed(0)
        model = est._build(D, C).double()
        losses[red] = est._batch_loss(model, f, y).item()
        with torch.no_grad():
            z = model.tuner(f)
            zn = z / z.norm(dim=1, keepdim=True)
            fn = f / f.norm(dim=1, keepdim=True)
            per_sample = ((zn - fn) ** 2).sum(1).mean().item()
    assert math.isclose(losses["per-sample"] - losses["element"], per_sample * (1 - 1 / D),
                        rel_tol=1e-9)


def test_authors_variant_details_and_their_overrides():
    est = NMTune.authors_variant(D)
    assert (est.consistency_reduction, est.residual_init, est.classifier_init) == \
        ("element", 0.5, "kaiming-uniform")
    torch.manual_seed(0)
    model = est._build(D, C)
    assert torch.all(model.head.bias == 0)
    assert torch.allclose(model.tuner.scale, torch.full((D,), 0.5))
    # Kaiming-uniform bound √(6/fan_in) is √6 times nn.Linear's 1/√fan_in
    assert model.head.weight.abs().max() > 1.2 / math.sqrt(D)
    assert model.head.weight.abs().max() <= math.sqrt(6 / D)
    other = NMTune.authors_variant(D, residual_init=1.0, classifier_init="torch")
    assert (other.residual_init, other.classifier_init, other.lambda_mse) == (1.0, "torch", 1.0)
    paper = NMTune()
    assert (paper.consistency_reduction, paper.classifier_init) == ("per-sample", "torch")


def test_bad_consistency_reduction_is_refused():
    from featstore.errors import ConfigError

    X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
    with pytest.raises(ConfigError, match="'consistency_reduction' parameter of NMTune"):
        NMTune(consistency_reduction="sum", epochs=1).fit(X, np.arange(20) % 2)
