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
