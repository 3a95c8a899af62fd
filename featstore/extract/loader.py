"""Decoding in DataLoader workers, in batches that never cross a stored chunk.

Batches start at chunk boundaries whatever chunks are left to do, so a resumed run
feeds the backbone exactly the batches an uninterrupted run did and writes the same
bytes. Augmented views are seeded by (seed, sample index, view). :func:`ahead` prepares
the next batch (decoding without workers, collating, tokenizing) in a thread while the
forward pass runs.
"""

from __future__ import annotations

import queue
import random
import threading
import zlib
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featstore.data import SampleSet
from featstore.store import schema


class _Samples(Dataset):
    def __init__(self, samples: SampleSet, transform: Callable[[Any], Any], views: int,
                 augment: bool, seed: int):
        self.samples, self.transform = samples, transform
        self.views, self.augment, self.seed = views, augment, seed

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[int, Any, str | None]:
        try:
            raw = self.samples.load(index)
            if not self.augment:
                return index, self.transform(raw), None
            out = []
            for view in range(self.views):
                s = zlib.crc32(f"{self.seed}:{index}:{view}".encode())
                random.seed(s)
                torch.manual_seed(s)
                np.random.seed(s)
                out.append(self.transform(raw))
            return index, out, None
        except Exception as err:  # recorded as invalid (or raised with --strict)
            return index, None, f"{type(err).__name__}: {err}"


def _keep_lists(batch: list[tuple[int, Any, str | None]]) -> list[tuple[int, Any, str | None]]:
    return batch


def chunk_batches(chunks: Iterable[int], n_rows: int, chunk_rows: int,
                  batch_size: int) -> list[list[int]]:
    out = []
    for c in chunks:
        start, stop = schema.chunk_bounds(c, n_rows, chunk_rows)
        out += [list(range(s, min(s + batch_size, stop))) for s in range(start, stop, batch_size)]
    return out


def iterate(samples: SampleSet, transform: Callable[[Any], Any], batches: list[list[int]], *,
            views: int, augment: bool, seed: int, num_workers: int,
            pin_memory: bool) -> Iterator[list[tuple[int, Any, str | None]]]:
    """Yield, per batch, ``(index, transformed sample(s) or None, error or None)`` tuples."""
    dataset = _Samples(samples, transform, views, augment, seed)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers,
                        collate_fn=_keep_lists, pin_memory=pin_memory,
                        prefetch_factor=4 if num_workers else None,
                        persistent_workers=False)
    yield from loader


T = TypeVar("T")
R = TypeVar("R")
_DONE = object()


def ahead(items: Iterator[T], prepare: Callable[[T], R], *,
          depth: int = 1) -> Iterator[tuple[T, R]]:
    """Yield ``(item, prepare(item))``, in order, with up to ``depth`` items fetched and
    prepared ahead in a background thread (the forward pass releases the GIL; so does a
    fast tokenizer). An exception there is raised here, at the item it happened on; when
    the consumer stops early the thread stops at its next item.
    """
    out: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put((item, prepare(item))):
                    return
        except BaseException as err:  # handed to the consumer, raised there
            put((_DONE, err))
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a DataLoader's workers stop with its iterator
        put((_DONE, None))

    thread = threading.Thread(target=work, name="featstore-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, prepared = out.get()
            if item is _DONE:
                if prepared is not None:
                    raise prepared
                return
            yield item, prepared
    finally:
        stop.set()
        thread.join()
