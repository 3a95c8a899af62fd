"""A store's spectrum with the float64 Gram reduction spread over a Ray cluster.

Ray tasks read whole chunks of the store from its shared location and return each
chunk's partial Gram matrix (:func:`featstore.analysis.spectrum.gram_partial`); the
driver sums the partials **in chunk order** with the very loop of the local path
(:func:`featstore.analysis.spectrum.reduce_partials`). Float64 addition is not
associative, so the order is what makes the singular values, SVE and LSVR equal the
one-process result bit for bit. The per-chunk products themselves do not depend on
the BLAS thread count (OpenBLAS splits a product over its output, never over the
summed dimension); they would differ in the last bits only on workers whose numpy/BLAS
build or CPU kernel differs from the driver's, which is logged.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from featstore.analysis.spectrum import (Spectrum, check_preprocessing, gram_partial,
                                         reduce_partials, singular_values, store_block,
                                         summarize)
from featstore.store import open_store, schema
from featstore.utils.cluster import connect, shared_path

log = logging.getLogger(__name__)

#: Bytes of partial Gram matrices the driver lets be in flight at once.
IN_FLIGHT_BYTES = 512 * 1024**2
#: At most this many chunks per task (one store open per task amortised over them).
MAX_CHUNKS_PER_TASK = 16


def blas_kernels() -> list[tuple[str, str, str]]:
    """The BLAS libraries this process uses: (library, version, CPU kernel)."""
    from threadpoolctl import threadpool_info

    return sorted((i.get("internal_api", ""), str(i.get("version")), str(i.get("architecture")))
                  for i in threadpool_info() if i.get("user_api") == "blas")


def chunk_partials(path: str, chunks: list[int], preprocessing: str, valid_only: bool,
                   view: int) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], list[Any]]:
    """The partial Gram matrices of ``chunks`` of the store at ``path`` (run in a Ray task),
    and the worker's BLAS kernels."""
    with open_store(path) as fs:
        arr, valid = fs.features, (fs.valid if valid_only else None)
        out = []
        for i in chunks:
            start, stop = schema.chunk_bounds(i, fs.n_samples, fs.chunk_rows)
            block = store_block(arr[start:stop], None if valid is None else valid[start:stop], view)
            out.append(gram_partial(block, preprocessing))
    return out, blas_kernels()


def plan_tasks(n_chunks: int, n_features: int, slots: int) -> tuple[list[list[int]], int]:
    """Chunks grouped into consecutive tasks, and how many tasks may be in flight: a few
    tasks per CPU slot, with the partials in flight bounded by IN_FLIGHT_BYTES."""
    window = max(1, 2 * slots)
    per_chunk = max(1, n_features * n_features * 8)
    group = max(1, min(MAX_CHUNKS_PER_TASK, IN_FLIGHT_BYTES // (window * per_chunk),
                       -(-n_chunks // (4 * max(1, slots)))))
    window = max(1, min(window, IN_FLIGHT_BYTES // (group * per_chunk)))
    return [list(range(s, min(s + group, n_chunks))) for s in range(0, n_chunks, group)], window


def spectrum_of_store_on_ray(path: str, address: str, preprocessing: str = "l2", *,
                             valid_only: bool = True, view: int = 0,
                             timeout: float | None = None) -> Spectrum:
    """:func:`featstore.analysis.spectrum.spectrum_of_store` of the store at ``path``
    (a folder or URL every Ray worker can read), computed on the cluster at ``address``.

    ``timeout``: seconds to wait for any one task (``None``: no limit). A task that
    fails with a featstore error (a damaged chunk, NaN features) raises that error.
    """
    check_preprocessing(preprocessing)
    with open_store(path) as fs:
        path, n_chunks, n_features = shared_path(fs.path), fs.n_chunks, fs.n_features
    ray = connect(address)
    slots = int(ray.cluster_resources().get("CPU", 1))
    tasks, window = plan_tasks(n_chunks, n_features, slots)
    remote = ray.remote(num_cpus=1)(chunk_partials)
    local_kernels = blas_kernels()
    pending: list[Any] = []

    def partials() -> Any:
        todo = iter(tasks)
        try:
            for group in todo:
                pending.append(remote.remote(path, group, preprocessing, valid_only, view))
                if len(pending) < window:
                    continue
                yield from _take(ray, pending, timeout, local_kernels)
            while pending:
                yield from _take(ray, pending, timeout, local_kernels)
        finally:
            for ref in pending:
                ray.cancel(ref)

    gram, n = reduce_partials(partials(), preprocessing)
    return summarize(singular_values(gram, n), n, n_features, preprocessing)


def _take(ray: Any, pending: list[Any], timeout: float | None, local_kernels: Any) -> Any:
    """The partials of the oldest task in flight (chunk order), or its featstore error."""
    from featstore.errors import FeatstoreError

    ref = pending.pop(0)
    try:
        out, kernels = ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, FeatstoreError):
            raise err.cause from None
        raise
    if kernels != local_kernels:
        log.warning("Ray worker BLAS %s differs from this process's %s: the spectrum may "
                    "differ from a local run in the last bits.", kernels, local_kernels)
    return out
