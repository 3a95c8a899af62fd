"""NMTune's three regularisers (docs/tune.md), usable in any PyTorch training loop.

All three are computed through B×B (or D×D, whichever is smaller) matrices, so they
add little to an MLP's step: no D×D covariance is formed when B < D, and no SVD of
the B×D batch is taken.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from featstore.utils.validation import INF, Interval, check

#: Eigenvalues below this are clamped before the square root: d√λ/dλ = 1/(2√λ) is
#: infinite at 0, and rank-deficient batches (B < D, or duplicate rows) have zeros.
EIG_EPS = 1e-10
#: How many of the largest singular values L_SVD averages.
TOP_K = Interval(int, 1, INF, "left")


def consistency_loss(z: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """L_MSE = mean over the batch of ‖z/‖z‖ − f/‖f‖‖² (f is the frozen feature)."""
    return (F.normalize(z, dim=-1) - F.normalize(f.detach(), dim=-1)).pow(2).sum(-1).mean()


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """L_COV = (1/D) Σ_{j≠k} C_jk², C = Z_cᵀZ_c/(B−1), via ‖Z_cZ_cᵀ‖_F² (B×B)."""
    b, d = z.shape
    if b < 2:
        raise ValueError("covariance_loss needs a batch of at least 2 samples.")
    zc = z - z.mean(dim=0, keepdim=True)
    small = zc @ zc.T if b <= d else zc.T @ zc          # same Frobenius norm either way
    total = small.pow(2).sum() / (b - 1) ** 2             # Σ_jk C_jk²
    diag = (zc.pow(2).sum(dim=0) / (b - 1)).pow(2).sum()  # Σ_j C_jj²
    return (total - diag) / d


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """σ(Z) in decreasing order from the eigenvalues of the smaller Gram matrix."""
    b, d = z.shape
    gram = z @ z.T if b <= d else z.T @ z
    eig = torch.linalg.eigvalsh(gram).flip(-1)
    return eig.clamp(min=EIG_EPS).sqrt()


def singular_value_loss(z: torch.Tensor, k: int = 1) -> torch.Tensor:
    """L_SVD = −mean_{i≤k} σ_i(Z)/Σ_j σ_j(Z) on the uncentred batch (k=1: the paper)."""
    check("k", k, TOP_K, owner="singular_value_loss", noun="parameter")
    sigma = singular_values(z)
    return -(sigma[:k] / sigma.sum()).mean()


def covariance_and_singular_value_loss(z: torch.Tensor, k: int = 1
                                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(covariance_loss(z), singular_value_loss(z, k))`` from one Gram matrix.

    When B ≤ D both terms come from G = ZZᵀ (B×B): the singular values from its
    eigenvalues, and the centred Gram Z_cZ_cᵀ = HGH (H = I − 11ᵀ/B) by double centring
    in O(B²), so the batch is multiplied by itself once instead of twice.
    """
    b, d = z.shape
    if b < 2:
        raise ValueError("covariance_loss needs a batch of at least 2 samples.")
    check("k", k, TOP_K, owner="covariance_and_singular_value_loss", noun="parameter")
    if b > d:  # the D×D route is already the small one: nothing to share
        return covariance_loss(z), singular_value_loss(z, k)
    g = z @ z.T
    sigma = torch.linalg.eigvalsh(g).flip(-1).clamp(min=EIG_EPS).sqrt()
    svd = -(sigma[:k] / sigma.sum()).mean()
    rows = g.mean(dim=1, keepdim=True)
    gc = g - rows - rows.T + g.mean()                     # HGH
    total = gc.pow(2).sum() / (b - 1) ** 2
    zc = z - z.mean(dim=0, keepdim=True)
    diag = (zc.pow(2).sum(dim=0) / (b - 1)).pow(2).sum()
    return (total - diag) / d, svd
