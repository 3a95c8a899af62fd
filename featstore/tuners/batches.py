"""Mini-batches for the training loop: from features in memory, or streamed from a store
chunk by chunk when its features do not fit in memory.

Streaming shuffles at two levels, as WebDataset-style loaders do: the order of the
stored chunks is drawn anew each epoch, and rows are shuffled inside a buffer of a few
chunks. Memory is O(buffer_chunks × chunk_rows × D), whatever the store's size.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch

from featstore.errors import DataError


def available_memory() -> int:
    """Bytes of memory available to this process (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name (macOS)
        return 1 << 62  # unknown: load in memory; --stream always forces streaming


def features_nbytes(store: Any) -> int:
    """Bytes the store's features take as float32 in memory."""
    return int(np.prod(store.shape)) * 4


def should_stream(store: Any, mode: str) -> bool:
    """Stream from ``store`` when ``mode`` is "always", or "auto" and its float32 features
    would take more than a quarter of the available memory (loading holds the stored
    array, a float32 copy and the valid rows at once)."""
    if mode == "always":
        return True
    if mode == "never":
        return False
    return features_nbytes(store) > available_memory() // 4


def in_memory_batches(X: torch.Tensor, y: torch.Tensor, batch_size: int, gen: torch.Generator,
                      device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of shuffled batches; the last partial batch is dropped."""
    order = torch.randperm(len(X), generator=gen).to(device)
    for s in range(len(X) // batch_size):
        idx = order[s * batch_size:(s + 1) * batch_size]
        yield X[idx], y[idx]


class ChunkStream:
    """Shuffled batches from a store's chunks, reading ``buffer_chunks`` chunks at a time.

    ``targets`` holds one training target per *valid* row, in store order; rows flagged
    invalid are skipped. Batches never mix a remainder across epochs; the number of
    batches per epoch is ``n_valid // batch_size``, as in memory.
    """

    def __init__(self, store: Any, targets: torch.Tensor, batch_size: int,
                 buffer_chunks: int = 4):
        self.store, self.batch_size, self.buffer_chunks = store, batch_size, buffer_chunks
        self.valid = store.valid
        self.targets = targets
        # position of each store row in ``targets`` (valid rows only)
        self.target_index = np.cumsum(self.valid) - 1
        self.n = int(self.valid.sum())

    def _read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        from featstore.store import schema

        start, stop = schema.chunk_bounds(index, self.store.n_samples, self.store.chunk_rows)
        keep = self.valid[start:stop]
        x = np.asarray(self.store.features[start:stop], dtype=np.float32)[keep]
        if not np.isfinite(x).all():
            raise DataError(f"{self.store.path}: rows {start}–{stop} (chunk {index}) contain NaN "
                            "or inf features. Check the store with `featstore verify`, or "
                            "re-extract with --dtype float32 if values overflow float16.")
        return x, self.target_index[start:stop][keep]

    def epoch(self, gen: torch.Generator, device: torch.device
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        chunks = torch.randperm(self.store.n_chunks, generator=gen).tolist()
        carry_x: list[np.ndarray] = []
        carry_t: list[np.ndarray] = []
        emitted = 0
        for b in range(0, len(chunks), self.buffer_chunks):
            parts = [self._read(i) for i in chunks[b:b + self.buffer_chunks]]
            x = np.concatenate(carry_x + [p[0] for p in parts])
            t = np.concatenate(carry_t + [p[1] for p in parts])
            order = torch.randperm(len(x), generator=gen).numpy()
            full = len(x) // self.batch_size * self.batch_size
            for s in range(0, full, self.batch_size):
                idx = order[s:s + self.batch_size]
                yield (torch.from_numpy(x[idx]).to(device),
                       self.targets[torch.from_numpy(t[idx])].to(device))
                emitted += 1
            carry_x, carry_t = [x[order[full:]]], [t[order[full:]]]
        assert emitted == self.n // self.batch_size


def iter_store_rows(store: Any) -> Iterator[np.ndarray]:
    """The valid rows of each chunk in store order, as float32 (for chunked inference)."""
    valid = store.valid
    for start, stop, block in store.iter_chunks():
        x = np.asarray(block, dtype=np.float32)[valid[start:stop]]
        if not np.isfinite(x).all():
            raise DataError(f"{store.path}: rows {start}–{stop} contain NaN or inf features.")
        yield x
