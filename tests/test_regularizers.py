"""The B×B regularisers equal the straightforward D×D / full-SVD formulas."""

from __future__ import annotations

import pytest
import torch

from featstore.tuners import consistency_loss, covariance_loss, singular_value_loss


def _naive_cov(z):
    b, d = z.shape
    zc = z - z.mean(0)
    c = zc.T @ zc / (b - 1)
    off = c - torch.diag(torch.diag(c))
    return off.pow(2).sum() / d


def _naive_svd(z, k):
    s = torch.linalg.svdvals(z)
    return -(s[:k] / s.sum()).mean()


def _naive_consistency(z, f):
    zn = z / z.norm(dim=1, keepdim=True)
    fn = f / f.norm(dim=1, keepdim=True)
    return ((zn - fn) ** 2).sum(1).mean()


@pytest.mark.parametrize("b, d", [(16, 64), (64, 16), (32, 32)])
@pytest.mark.parametrize("which", ["cov", "svd1", "svd5", "mse"])
def test_value_and_gradient_match(b, d, which):
    g = torch.Generator().manual_seed(b * 1000 + d)
    z0 = torch.randn(b, d, generator=g, dtype=torch.float64) + 0.3
    f = torch.randn(b, d, generator=g, dtype=torch.float64)
    fast, naive = {
        "cov": (covariance_loss, _naive_cov),
        "svd1": (lambda z: singular_value_loss(z, 1), lambda z: _naive_svd(z, 1)),
        "svd5": (lambda z: singular_value_loss(z, 5), lambda z: _naive_svd(z, 5)),
        "mse": (lambda z: consistency_loss(z, f), lambda z: _naive_consistency(z, f)),
    }[which]
    za = z0.clone().requires_grad_(True)
    zb = z0.clone().requires_grad_(True)
    va, vb = fast(za), naive(zb)
    va.backward()
    vb.backward()
    torch.testing.assert_close(va, vb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(za.grad, zb.grad, rtol=1e-5, atol=1e-5)


def test_rank_deficient_batch_has_finite_gradient():
    z = torch.zeros(8, 32, dtype=torch.float64)
    z[:, 0] = 1.0  # rank 1: most eigenvalues are exactly zero
    z.requires_grad_(True)
    singular_value_loss(z, k=5).backward()
    assert torch.isfinite(z.grad).all()


def test_all_zero_batch_gives_zero_loss_and_gradient():
    """A batch of dead (all-zero) tuner outputs: no NaN, nothing to push."""
    from featstore.tuners.regularizers import covariance_and_singular_value_loss

    z = torch.zeros(8, 16, requires_grad=True)
    cov, svd = covariance_and_singular_value_loss(z, 5)
    (cov + svd).backward()
    assert cov.item() == 0.0 and svd.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_float32_close_to_float64():
    z = torch.randn(64, 128)
    torch.testing.assert_close(singular_value_loss(z), singular_value_loss(z.double()).float(),
                               rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(covariance_loss(z), covariance_loss(z.double()).float(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("b, d, k", [(16, 40, 1), (32, 32, 3), (40, 12, 2)])
def test_shared_gram_equals_the_separate_terms(b, d, k):
    """NMTune's fused path (one Gram matrix) gives the public functions' values and
    gradients."""
    from featstore.tuners.regularizers import covariance_and_singular_value_loss

    torch.manual_seed(b + d)
    z0 = torch.randn(b, d, dtype=torch.float64) + 0.3
    za, zb = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
    cov, svd = covariance_and_singular_value_loss(za, k)
    (cov + 2 * svd).backward()
    ref_cov, ref_svd = covariance_loss(zb), singular_value_loss(zb, k)
    (ref_cov + 2 * ref_svd).backward()
    torch.testing.assert_close(cov, ref_cov, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(svd, ref_svd, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(za.grad, zb.grad, rtol=1e-5, atol=1e-7)


# -- float32 on ill-conditioned batches ------------------------------------------------------
def _ill_conditioned(b: int, d: int, cond: float, seed: int) -> torch.Tensor:
    """An uncentred, non-negative-looking float32 batch with cond(Z) = ``cond``: the
    singular vectors of |N(0,1)| + 1 (a dominant mean direction, as ReLU features
    have) with log-spaced singular values from 1 down to 1/cond."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, d, generator=g, dtype=torch.float64).abs() + 1.0
    u, _, vh = torch.linalg.svd(base, full_matrices=False)
    s = torch.logspace(0, -torch.log10(torch.tensor(cond)).item(), min(b, d), dtype=torch.float64)
    s[0] *= 3.0  # the top direction well separated, as in real features
    return ((u * s) @ vh * 10.0).float()


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return float((a.double() - ref).norm() / ref.norm())


@pytest.mark.parametrize("b, d", [(64, 64), (128, 128), (48, 96), (96, 48)])
@pytest.mark.parametrize("cond", [1e3, 1e4])
@pytest.mark.parametrize("which", ["svd1", "svd5", "cov"])
def test_float32_ill_conditioned_matches_float64_reference(b, d, cond, which):
    """A float32 batch (B = D among them, uncentred, cond 1e3–1e4): value and gradient
    within 1e-3 (relative) of the float64 full-SVD / D×D-covariance formulas on the
    same numbers. Through a float32 Gram matrix this was 3–46 % off."""
    z32 = _ill_conditioned(b, d, cond, seed=b + d + int(cond))
    s = torch.linalg.svdvals(z32.double())
    assert cond / 2 < float(s[0] / s[-1]) < cond * 5  # the batch is what the test says
    fast, naive = {
        "svd1": (lambda z: singular_value_loss(z, 1), lambda z: _naive_svd(z, 1)),
        "svd5": (lambda z: singular_value_loss(z, 5), lambda z: _naive_svd(z, 5)),
        "cov": (covariance_loss, _naive_cov),
    }[which]
    za = z32.clone().requires_grad_(True)
    zr = z32.double().requires_grad_(True)
    va, vr = fast(za), naive(zr)
    va.backward()
    vr.backward()
    assert va.dtype == torch.float32 and za.grad.dtype == torch.float32
    assert abs(va.item() - vr.item()) <= 1e-3 * abs(vr.item())
    assert _rel(za.grad, zr.grad) <= 1e-3


@pytest.mark.parametrize("cond", [1e3, 1e4])
def test_fused_float32_terms_match_reference(cond):
    """NMTune's fused call (both terms, one Gram) in float32, weighted as in training."""
    from featstore.tuners.regularizers import covariance_and_singular_value_loss

    z32 = _ill_conditioned(64, 64, cond, seed=7)
    za = z32.clone().requires_grad_(True)
    zr = z32.double().requires_grad_(True)
    cov, svd = covariance_and_singular_value_loss(za, 5)
    (0.04 * cov + 0.001 * svd).backward()
    (0.04 * _naive_cov(zr) + 0.001 * _naive_svd(zr, 5)).backward()
    assert _rel(cov.detach(), _naive_cov(zr.detach())) <= 1e-3
    assert _rel(svd.detach(), _naive_svd(zr.detach(), 5)) <= 1e-3
    assert _rel(za.grad, zr.grad) <= 1e-3


def test_degenerate_singular_values_give_the_reference_gradient():
    """Equal singular values below the top k (a flat tail, as whitened or duplicated
    features give): the closed-form gradient is finite and equals the float64
    reference; autograd through eigh divides by λ_i − λ_j there."""
    g = torch.Generator().manual_seed(3)
    q1, _ = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(48, 32, generator=g, dtype=torch.float64))
    s = torch.tensor([9.0, 7.0, 5.0] + [1.0] * 29, dtype=torch.float64)
    z0 = (q1 * s) @ q2.T
    for k in (1, 3):
        za, zr = z0.clone().requires_grad_(True), z0.clone().requires_grad_(True)
        singular_value_loss(za, k).backward()
        _naive_svd(zr, k).backward()
        assert torch.isfinite(za.grad).all()
        torch.testing.assert_close(za.grad, zr.grad, rtol=1e-7, atol=1e-9)


def test_consistency_reductions():
    """"element" (the authors' MSELoss) is the per-sample (paper) value divided by D."""
    g = torch.Generator().manual_seed(0)
    z, f = torch.randn(16, 40, generator=g), torch.randn(16, 40, generator=g)
    per_sample = consistency_loss(z, f)
    element = consistency_loss(z, f, reduction="element")
    torch.testing.assert_close(element * 40, per_sample)
    zn, fn = torch.nn.functional.normalize(z, dim=1), torch.nn.functional.normalize(f, dim=1)
    torch.testing.assert_close(element, torch.nn.MSELoss()(zn, fn))


def test_bad_reduction_and_shape_are_refused():
    from featstore.errors import ConfigError

    z = torch.randn(8, 4)
    with pytest.raises(ConfigError, match="'reduction' parameter of consistency_loss"):
        consistency_loss(z, z, reduction="sum")
    with pytest.raises(ValueError, match=r"shape \(B, D\)"):
        singular_value_loss(torch.randn(8))


@pytest.mark.parametrize("b, d", [(64, 64), (128, 64)])
@pytest.mark.parametrize("mean", [1.0, 10.0])
def test_float32_covariance_of_a_nearly_decorrelated_uncentred_batch(b, d, mean):
    """Σ_{j≠k} C_jk² is the small difference of two large sums when the features are
    nearly decorrelated (off-diagonal 1e-3 of the diagonal): a float32 Gram route was
    0.3–1 % off in value here; the float64 one holds 1e-3 in value and gradient."""
    g = torch.Generator().manual_seed(b + int(mean))
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    q, _ = torch.linalg.qr(x - x.mean(0))                     # orthonormal centred columns
    s = torch.logspace(0, -2, d, dtype=torch.float64)
    z32 = (q * s + 1e-3 * torch.randn(b, d, generator=g, dtype=torch.float64) * s + mean).float()
    za, zr = z32.clone().requires_grad_(True), z32.double().requires_grad_(True)
    va, vr = covariance_loss(za), _naive_cov(zr)
    va.backward()
    vr.backward()
    assert abs(va.item() - vr.item()) <= 1e-3 * abs(vr.item())
    assert _rel(za.grad, zr.grad) <= 1e-3


def test_consistency_with_zero_rows_follows_f_normalize():
    """A zero row of z (a dead ReLU output) or f counts as F.normalize makes it: 0."""
    z = torch.randn(6, 5, dtype=torch.float64)
    f = torch.randn(6, 5, dtype=torch.float64)
    z[1] = 0.0
    f[3] = 0.0
    ref = (torch.nn.functional.normalize(z, dim=1)
           - torch.nn.functional.normalize(f, dim=1)).pow(2).sum(1).mean()
    torch.testing.assert_close(consistency_loss(z, f), ref)
