"""Singular-value spectrum of a feature matrix, streamed through its Gram matrix.

σ(F)² are the eigenvalues of the D×D Gram matrix FᵀF, accumulated in float64 chunk by
chunk: exact enough for entropies and ratios, memory O(D²), and it works on stores
larger than memory. Truncated or randomised SVD biases SVE and is not used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np

from featstore.errors import ConfigError, DataError

#: How rows are preprocessed before the spectrum (docs/tune.md); recorded with results.
PREPROCESSING = ("l2", "none", "center", "l2-rowmean")


def _prep(block: np.ndarray, how: str) -> np.ndarray:
    x = np.asarray(block, dtype=np.float64)
    if how in ("l2", "l2-rowmean"):
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norms > 0, norms, 1.0)
    if how == "l2-rowmean":  # the authors' analysis script: then subtract each row's mean
        x = x - x.mean(axis=1, keepdims=True)
    return x


def check_preprocessing(preprocessing: str) -> str:
    if preprocessing not in PREPROCESSING:
        raise ConfigError(f"The 'preprocessing' parameter must be one of {', '.join(PREPROCESSING)}. "
                          f"Got {preprocessing!r} instead.")
    return preprocessing


def gram_partial(block: np.ndarray, preprocessing: str = "l2"
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """One row block's share of the Gram matrix: XᵀX (float64), the column sums and the
    row count of the preprocessed block X. Computed locally or on a Ray worker
    (:mod:`featstore.analysis.gram_ray`), then summed by :func:`reduce_partials`."""
    x = _prep(block, "none" if preprocessing == "center" else preprocessing)
    if x.ndim != 2:
        raise DataError(f"Expected 2-d row blocks (N, D); got shape {x.shape}.")
    if not np.isfinite(x).all():
        raise DataError("Features contain NaN or inf; the spectrum is undefined. "
                        "Check the store with `featstore verify`.")
    return x.T @ x, x.sum(axis=0), x.shape[0]


def reduce_partials(partials: Iterable[tuple[np.ndarray, np.ndarray, int]],
                    preprocessing: str = "l2") -> tuple[np.ndarray, int]:
    """FᵀF and the row count from per-block partials, summed one after another in the
    order given: the one reduction order of the local and the Ray path, so both give
    the same bits (float64 addition is not associative).

    Column centring needs the column means, so for ``center`` the sums are kept
    alongside and the Gram matrix is corrected at the end: (F−1μᵀ)ᵀ(F−1μᵀ) = FᵀF − nμμᵀ.
    """
    gram = None
    col_sum = None
    n = 0
    for part_gram, part_sum, part_n in partials:
        if gram is None:
            gram = np.zeros_like(part_gram)
            col_sum = np.zeros_like(part_sum)
        gram += part_gram
        col_sum += part_sum
        n += part_n
    if gram is None or n == 0:
        raise DataError("No rows to analyse.")
    if preprocessing == "center":
        mu = col_sum / n
        gram -= n * np.outer(mu, mu)
    return gram, n


def gram_from_chunks(chunks: Iterable[np.ndarray], preprocessing: str = "l2"
                     ) -> tuple[np.ndarray, int]:
    """FᵀF (float64) and the row count, from row blocks of F (see :func:`reduce_partials`)."""
    check_preprocessing(preprocessing)
    return reduce_partials((gram_partial(b, preprocessing) for b in chunks), preprocessing)


def singular_values(gram: np.ndarray, n_rows: int) -> np.ndarray:
    """σ in decreasing order, r = min(N, D) of them, from the Gram matrix."""
    eig = np.linalg.eigvalsh(gram)[::-1]
    eig = np.clip(eig, 0.0, None)  # tiny negative round-off
    return np.sqrt(eig[: min(n_rows, gram.shape[0])])


def sve(sigma: np.ndarray) -> float:
    """Singular value entropy: −Σ pᵢ ln pᵢ with pᵢ = σᵢ/Σσ."""
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def lsvr(sigma: np.ndarray) -> float:
    """Largest singular value ratio: −ln(σ₁/Σσ)."""
    return float(-np.log(sigma[0] / sigma.sum()))


@dataclass
class Spectrum:
    """A spectrum and its summary numbers, with the choices that produced them."""

    sve: float
    lsvr: float
    effective_rank: float           # exp(SVE) (Roy & Vetterli)
    top_k_energy: dict[str, float]  # share of Σσ² in the top k directions
    n_rows: int
    n_features: int
    preprocessing: str
    sigma: list[float] = field(repr=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(sigma: np.ndarray, n_rows: int, n_features: int, preprocessing: str) -> Spectrum:
    energy = sigma ** 2 / (sigma ** 2).sum()
    cum = np.cumsum(energy)
    topk = {str(k): float(cum[min(k, len(cum)) - 1]) for k in (1, 5, 10, 20, 100) if k <= len(cum)}
    s = sve(sigma)
    return Spectrum(sve=s, lsvr=lsvr(sigma), effective_rank=float(np.exp(s)), top_k_energy=topk,
                    n_rows=n_rows, n_features=n_features, preprocessing=preprocessing,
                    sigma=sigma.tolist())


def spectrum_of_array(x: np.ndarray, preprocessing: str = "l2") -> Spectrum:
    gram, n = gram_from_chunks([x], preprocessing)
    return summarize(singular_values(gram, n), n, x.shape[1], preprocessing)


def spectrum_of_blocks(blocks: Iterable[np.ndarray], preprocessing: str = "l2") -> Spectrum:
    """The spectrum of the rows of several (N_i, D) blocks stacked, in memory O(D²)."""
    gram, n = gram_from_chunks(blocks, preprocessing)
    return summarize(singular_values(gram, n), n, gram.shape[0], preprocessing)


def store_block(block: np.ndarray, valid: np.ndarray | None, view: int = 0) -> np.ndarray:
    """The rows of one stored chunk that enter the spectrum: one view, valid rows only."""
    if block.ndim == 3:
        block = block[:, view]
    return block if valid is None else block[valid]


def spectrum_of_store(store: Any, preprocessing: str = "l2", valid_only: bool = True,
                      view: int = 0) -> Spectrum:
    """Stream a store's features chunk by chunk (memory O(D²))."""
    valid = store.valid if valid_only else None
    blocks = (store_block(block, None if valid is None else valid[start:stop], view)
              for start, stop, block in store.iter_chunks())
    gram, n = gram_from_chunks(blocks, preprocessing)
    return summarize(singular_values(gram, n), n, store.n_features, preprocessing)
