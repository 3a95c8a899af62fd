"""NMTune's three regularisers (docs/tune.md), usable in any PyTorch training loop.

The covariance and singular-value terms are computed from one small Gram matrix — B×B
(ZZᵀ) or D×D (ZᵀZ), whichever is smaller — so neither forms the D×D covariance when
B < D nor takes an SVD of the B×D batch. The Gram matrix and its eigendecomposition are
formed in float64 and the results returned in the batch's dtype: in float32 the
eigenvalues of a float32 Gram matrix lose the small singular values of an
ill-conditioned batch (cond(ZZᵀ) = cond(Z)², past float32's 1e7 at cond(Z) = 1e4), and
the gradient through them was 3–48 % off (tests/test_regularizers.py holds it to 1e-3).

The gradient is written in closed form rather than by autograd through ``eigh``: for
a Gram matrix G = V diag(λ) Vᵀ and σ_i = √λ_i, dσ_i/dG = v_i v_iᵀ / (2σ_i), so the
gradient of any function of σ is V diag(∂L/∂σ_i / 2σ_i) Vᵀ. ``eigh``'s own backward
divides by λ_i − λ_j, which is unstable for the (near-)equal eigenvalues a batch often
has; the closed form never forms that ratio and is well defined whenever ∂L/∂σ is
equal within each (near-)degenerate group, as it is for Σσ and the top-k sum.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from featstore.utils.validation import INF, Interval, Options, check

#: Eigenvalues below ``n · eps · λ_max`` (float64 round-off of an n×n Gram matrix) are
#: treated as zero: their σ adds nothing and their direction gets no gradient (the
#: minimum-norm subgradient at a rank-deficient batch, where d√λ/dλ is infinite).
EIG_RTOL_FACTOR = torch.finfo(torch.float64).eps
#: How many of the largest singular values L_SVD averages.
TOP_K = Interval(int, 1, INF, "left")
#: How the consistency term averages: "per-sample" (the paper: mean over the batch of
#: ‖ẑ − f̂‖²) or "element" (the authors' code, torch's MSELoss: mean over all B·D
#: elements, i.e. the per-sample form divided by D).
REDUCTIONS = ("per-sample", "element")


def consistency_loss(z: torch.Tensor, f: torch.Tensor, reduction: str = "per-sample"
                     ) -> torch.Tensor:
    """L_MSE between the L2-normalised z and the frozen f.

    ``reduction="per-sample"`` (the paper): mean over the batch of ‖z/‖z‖ − f/‖f‖‖².
    ``reduction="element"`` (the authors' code, ``torch.nn.MSELoss``): mean over all
    B·D elements of the same squared difference — the per-sample value divided by D.
    """
    check("reduction", reduction, Options(*REDUCTIONS), owner="consistency_loss",
          noun="parameter")
    # the difference itself, not 2 − 2·cos: no cancellation when z is close to f
    sq = (F.normalize(z, dim=-1) - F.normalize(f.detach(), dim=-1)).square()
    return sq.sum(-1).mean() if reduction == "per-sample" else sq.mean()


def _self_product(a: torch.Tensor, rows: bool) -> torch.Tensor:
    """AAᵀ (``rows``) or AᵀA. On the CPU through numpy, whose matmul recognises a
    matrix times its own transpose and calls BLAS ``syrk``: half the multiplications of
    ``torch.mm``, which does not, and an exactly symmetric result."""
    if a.device.type == "cpu":
        x = a.numpy()
        return torch.from_numpy(x @ x.T if rows else x.T @ x)
    return torch.mm(a, a.t()) if rows else torch.mm(a.t(), a)


class _GramTerms(torch.autograd.Function):
    """(L_COV, L_SVD) of Z from one float64 Gram matrix, with a closed-form gradient.

    Forward keeps what backward needs (Z in float64, the covariance pieces and
    dL_SVD/dG), so that backward is one float64 product of a small matrix with Z. Few
    tensor operations on purpose: at B = 64 each costs about as much as the arithmetic.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, k: int, want_cov: bool, want_svd: bool):  # type: ignore[override]
        b, d = z.shape
        z64 = z.detach().to(torch.float64)
        small_rows = b <= d
        # the only O(B·D·min(B, D)) product of the forward pass
        g = _self_product(z64, rows=small_rows)
        n = g.shape[0]
        mu = z64.mean(0)
        cov = svd = z.new_zeros(())
        cov_g = cov_m = col_sq = dg_svd = None
        if want_cov:
            if small_rows:  # Z_cZ_cᵀ = HGH (H = I − 11ᵀ/B): double centring, O(B²)
                r = g.mean(1)
                cov_g = g - r[:, None] - r[None, :] + r.mean()
                col_sq = (z64 - mu).square_().sum(0)      # (B−1)·diag(C)
                flat = cov_g.view(-1)  # Σ_{j≠k} C_jk² = (‖Z_cZ_cᵀ‖² − Σ_j colsq_j²)/(B−1)²
                cov = (torch.dot(flat, flat) - torch.dot(col_sq, col_sq)) / ((b - 1) ** 2 * d)
            else:           # C itself is the small matrix: C = (ZᵀZ − Bμμᵀ)/(B−1)
                cov_m = torch.addr(g, mu, mu, alpha=-b).div_(b - 1)
                cov_m.diagonal().zero_()                   # Off(C)
                flat = cov_m.view(-1)
                cov = torch.dot(flat, flat) / d
        if want_svd:
            lam, vec = torch.linalg.eigh(g)               # ascending
            null = lam <= lam[-1] * (n * EIG_RTOL_FACTOR)
            sigma = lam.clamp(min=0).sqrt_().masked_fill_(null, 0.0)
            kk = min(k, n)
            total = sigma.sum().clamp_min(torch.finfo(torch.float64).tiny)  # Z = 0: L = 0
            ratio = sigma[n - kk:].sum() / (kk * total)
            svd = -ratio
            # dL/dσ_i = ratio/Σσ − [i among the top k]/(k·Σσ); dL/dG = V diag(dL/dσ / 2σ) Vᵀ
            top = torch.zeros_like(lam)
            top[n - kk:] = 1.0 / kk
            coef = (ratio - top).div_(total * 2 * sigma).masked_fill_(null, 0.0)
            # V diag(coef) Vᵀ: coef < 0 on the top k, ≥ 0 elsewhere (ratio < 1/k), so it
            # is PPᵀ − NNᵀ with N of k columns — a self product (syrk) and a thin one
            head = vec[:, :n - kk] * coef[:n - kk].sqrt()
            tail = vec[:, n - kk:] * (-coef[n - kk:]).clamp(min=0).sqrt()
            dg_svd = _self_product(head, rows=True).sub_(torch.mm(tail, tail.t()))
        ctx.save_for_backward(z64, mu)
        ctx.parts = (small_rows, cov_g, cov_m, col_sq, dg_svd)
        ctx.out_dtype = z.dtype
        return cov.to(z.dtype), svd.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_cov: torch.Tensor, grad_svd: torch.Tensor):  # type: ignore[override]
        z64, mu = ctx.saved_tensors
        small_rows, cov_g, cov_m, col_sq, dg_svd = ctx.parts
        b, d = z64.shape
        # m = dL/dG (symmetric): dL/dZ = 2·M·Z for G = ZZᵀ, 2·Z·M for G = ZᵀZ
        m = dg_svd * grad_svd.to(torch.float64) if dg_svd is not None else None
        if small_rows:
            if cov_g is None:
                return torch.mm(m, z64).mul_(2.0).to(ctx.out_dtype), None, None, None
            s = grad_cov.to(torch.float64) * (2.0 / ((b - 1) ** 2 * d))
            m = cov_g * s if m is None else torch.addcmul(m, cov_g, s)
            # Σ_j C_jj² adds −4·Z_c·diag(colsq)/((B−1)²D) = −Z·diag(w) + 1(μ∘w)ᵀ
            w = col_sq * (2.0 * s)
            grad = torch.addmm(mu * w, m, z64, alpha=2.0).addcmul_(z64, w, value=-1.0)
            return grad.to(ctx.out_dtype), None, None, None
        if cov_m is None:
            return torch.mm(z64, m).mul_(2.0).to(ctx.out_dtype), None, None, None
        # dL/dZ_c = 4·Z_c·Off(C)/((B−1)D); Z_c·P = Z·P − 1(μᵀP), folded into one product
        part = cov_m * (grad_cov.to(torch.float64) * (4.0 / ((b - 1) * d)))
        m = part if m is None else torch.add(part, m, alpha=2.0)
        grad = torch.addmm(-(mu @ part), z64, m)
        return grad.to(ctx.out_dtype), None, None, None


def _checked(z: torch.Tensor, k: int, owner: str, need_pairs: bool) -> None:
    if z.ndim != 2:
        raise ValueError(f"{owner} expects a batch of shape (B, D); got shape {tuple(z.shape)}.")
    if need_pairs and z.shape[0] < 2:
        raise ValueError(f"{owner} needs a batch of at least 2 samples; got {z.shape[0]}.")
    check("k", k, TOP_K, owner=owner, noun="parameter")


def covariance_loss(z: torch.Tensor) -> torch.Tensor:
    """L_COV = (1/D) Σ_{j≠k} C_jk², C = Z_cᵀZ_c/(B−1), from the smaller Gram matrix."""
    _checked(z, 1, "covariance_loss", need_pairs=True)
    return _GramTerms.apply(z, 1, True, False)[0]


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """σ(Z) in decreasing order (float64 Gram eigenvalues, returned in z's dtype)."""
    b, d = z.shape
    z64 = z.to(torch.float64)
    gram = z64 @ z64.T if b <= d else z64.T @ z64
    eig = torch.linalg.eigvalsh(gram).flip(-1)
    return eig.clamp(min=0).sqrt().to(z.dtype)


def singular_value_loss(z: torch.Tensor, k: int = 1) -> torch.Tensor:
    """L_SVD = −mean_{i≤k} σ_i(Z)/Σ_j σ_j(Z) on the uncentred batch (k=1: the paper)."""
    _checked(z, k, "singular_value_loss", need_pairs=False)
    return _GramTerms.apply(z, k, False, True)[1]


def covariance_and_singular_value_loss(z: torch.Tensor, k: int = 1
                                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(covariance_loss(z), singular_value_loss(z, k))`` from one Gram matrix.

    The B×B (or D×D) Gram matrix is formed and eigendecomposed once, in float64, and
    both terms' gradients leave through one product of a small matrix with Z.
    """
    _checked(z, k, "covariance_and_singular_value_loss", need_pairs=True)
    return _GramTerms.apply(z, k, True, True)
