"""Whole chunks of features: the unit of work, of resume, of retry and of distribution.

Every engine — the single-process loop in :mod:`featstore.extract.pipeline` and the Ray
actors of the scale-out engine — computes a chunk with :func:`compute_chunks`, so the
same chunk is always cut into the same batches (:func:`plan_batches`), run through the
same forward and its rows placed by row id, never by arrival order. That is what makes a
resumed, retried or distributed run write the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch

from featstore.backbones import Backbone
from featstore.data import SampleSet
from featstore.errors import DimensionMismatchError, SampleLoadError
from featstore.extract import loader
from featstore.extract.config import ExtractConfig
from featstore.store import schema


@dataclass
class ComputedChunk:
    """One stored chunk's rows, ready to write (rows that failed to load stay zero)."""

    index: int
    features: np.ndarray
    valid: np.ndarray
    #: ``{"sample_id", "error"}`` of every row of the chunk that could not be read.
    invalid: list[dict[str, str]] = field(default_factory=list)


def batch_rows(backbone: Backbone, cfg: ExtractConfig) -> int:
    """Samples per forward pass: ``--batch-size``, unless the backbone asks for its own
    (an HTTP API sends ``texts per request × requests in flight`` at a time)."""
    return int(getattr(backbone, "preferred_batch_rows", None) or cfg.batch_size)


def plan_batches(backbone: Backbone, samples: SampleSet, chunks: list[int], n_rows: int,
                 chunk_rows: int, batch_size: int, *,
                 by_length: bool = True) -> list[list[int]]:
    """The batches (row ids) of ``chunks``, in order; a pure function of its arguments.

    Batches never cross a chunk boundary, so any subset of chunks is batched exactly as
    in a full run. Where the backbone reports per-sample lengths
    (:meth:`~featstore.backbones.Backbone.sample_lengths`: texts) and ``by_length``,
    a chunk's rows are ordered longest first (ties by row id) before they are cut into
    batches, so each batch pads only to its own longest sample; rows are placed back
    by row id. Otherwise (images) a chunk's batches are its rows in order.
    """
    out: list[list[int]] = []
    for c in chunks:
        start, stop = schema.chunk_bounds(c, n_rows, chunk_rows)
        rows = list(range(start, stop))
        lengths = backbone.sample_lengths(samples, rows) if by_length else None
        if lengths is not None:
            if len(lengths) != len(rows):
                raise ValueError(f"{backbone.id}.sample_lengths returned {len(lengths)} "
                                 f"lengths for {len(rows)} rows")
            rows.sort(key=lambda i: (-int(lengths[i - start]), i))
        out += [rows[s:s + batch_size] for s in range(0, len(rows), batch_size)]
    return out


def compute_chunks(backbone: Backbone, samples: SampleSet, chunks: list[int], *,
                   n_features: int, chunk_rows: int, cfg: ExtractConfig, device: torch.device,
                   num_workers: int = 0,
                   on_batch: Callable[[int], None] | None = None) -> Iterator[ComputedChunk]:
    """Yield each of ``chunks`` once all its rows are computed (decode in ``num_workers``
    DataLoader workers, forward here). ``on_batch(rows)`` is called after every batch.

    Raises :class:`SampleLoadError` for an unreadable sample with ``cfg.strict`` and
    :class:`DimensionMismatchError` when the backbone's D is not ``n_features``.
    """
    n, k, d = len(samples), cfg.views, n_features
    backbone.configure(precision=cfg.precision, compile=cfg.compile)
    batches = plan_batches(backbone, samples, chunks, n, chunk_rows, batch_rows(backbone, cfg),
                           by_length=cfg.length_buckets)
    augment = cfg.augment == "train"
    # Samples are pinned after collation (a stacked batch), not one by one.
    stream = loader.iterate(samples, backbone.transform(train=augment), batches, views=k,
                            augment=augment, seed=cfg.seed, num_workers=num_workers,
                            pin_memory=False)
    if not backbone.remote:  # decode (0 workers), collate and tokenize the next batch meanwhile
        prepared = loader.ahead(stream, lambda b: collate(backbone, b, k))
    else:  # an API backbone overlaps its requests itself
        prepared = ((b, collate(backbone, b, k)) for b in stream)
    pending: dict[int, _Filling] = {}
    for batch, inputs in prepared:
        ok = [i for i, _, err in batch if err is None]
        feats = features(backbone, inputs, len(ok), k) if ok else None
        if feats is not None and feats.shape[-1] != d:
            raise DimensionMismatchError(
                f"{backbone.id} returned {feats.shape[-1]}-d features, but the store holds "
                f"{d}-d ones. Use --force to extract it again.")
        for j, i in enumerate(ok):
            buf = _filling(pending, i // chunk_rows, n, chunk_rows, k, d)
            buf.chunk.features[i % chunk_rows] = feats[j]
            buf.chunk.valid[i % chunk_rows] = True
        for i, _, err in batch:
            c = i // chunk_rows
            buf = _filling(pending, c, n, chunk_rows, k, d)
            if err is not None:
                if cfg.strict:
                    raise SampleLoadError(
                        f"Sample {samples.sample_ids[i]!r} of {samples.name} could not be "
                        f"read: {err}. Fix or remove it, or drop --strict to record it as "
                        "invalid and go on.")
                buf.chunk.invalid.append({"sample_id": samples.sample_ids[i], "error": err})
            buf.filled += 1
        if on_batch is not None:
            on_batch(len(batch))
        for c in sorted({i // chunk_rows for i, _, _ in batch}):
            buf = pending[c]
            if buf.filled == len(buf.chunk.valid):
                del pending[c]
                yield buf.chunk


@dataclass
class _Filling:
    chunk: ComputedChunk
    filled: int = 0


def _filling(pending: dict[int, _Filling], c: int, n: int, rows: int, k: int,
             d: int) -> _Filling:
    if c not in pending:
        start, stop = schema.chunk_bounds(c, n, rows)
        shape = (stop - start, k, d) if k > 1 else (stop - start, d)
        pending[c] = _Filling(ComputedChunk(c, np.zeros(shape, np.float32),
                                            np.zeros(stop - start, bool)))
    return pending[c]


def collate(backbone: Backbone, batch: list[tuple[int, Any, str | None]], views: int) -> Any:
    """The backbone's input for a batch's readable samples (each a list of ``views``
    views when views > 1), or None when none was readable."""
    items = [x for _, x, err in batch if err is None]
    if not items:
        return None
    if views > 1:
        items = [v for views_of_one in items for v in views_of_one]
    return backbone.collate(items)


def features(backbone: Backbone, inputs: Any, n_items: int, views: int) -> np.ndarray:
    """Features of a collated batch of ``n_items`` samples: (n_items[, views], D)."""
    out = backbone.encode(inputs).numpy()
    return out.reshape(n_items, views, -1) if views > 1 else out


def encode(backbone: Backbone, items: list[Any], views: int) -> np.ndarray:
    """Features of transformed samples (each a list of ``views`` views when views > 1)."""
    batch = [(j, x, None) for j, x in enumerate(items)]
    return features(backbone, collate(backbone, batch, views), len(items), views)
