"""`featstore extract`: run each backbone once over data set splits, into a root."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from featstore.utils import keys
from featstore.backbones import Backbone, backbone_key_inputs, create_backbone
from featstore.data import SampleSet
from featstore.utils.devices import resolve_device
from featstore.errors import (ConfigError, DimensionMismatchError, SampleLoadError, StoreCorruptError,
                      StoreIncompleteError)
from featstore.store import (FeatureStore, Root, backend_for, create_store, location, open_store,
                             schema)
from featstore.store.lease import FinishedMeanwhile, Lease, LeaseLostError, hold_lease
from featstore.extract import loader
from featstore.extract.config import ExtractConfig
from featstore.extract.writer import ChunkWriter

log = logging.getLogger(__name__)

#: How many failed sample ids a result lists (all are in the store's `valid` array).
MAX_LISTED_INVALID = 20


@dataclass
class ExtractResult:
    """What one (backbone, data set, split) extraction did."""

    key: str
    path: str
    backbone: str
    dataset: str
    split: str
    shape: list[int]
    cached: bool                      # True: the key was already complete, nothing ran
    resumed_chunks: int = 0           # chunks found committed from an earlier run
    computed_chunks: int = 0
    n_invalid: int = 0
    invalid: list[dict[str, str]] = field(default_factory=list)  # first failed samples
    seconds: float = 0.0
    samples_per_second: float | None = None
    waited_seconds: float = 0.0       # time spent waiting for another writer of this key

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def key_inputs(backbone: Backbone, samples: SampleSet, cfg: ExtractConfig) -> dict[str, Any]:
    """Everything that determines the stored values, and nothing else.

    Where the backbone's files sit is not in it (see :func:`featstore.backbones.backbone_key_inputs`):
    the same weights at two paths give one key. The metadata keeps the full provenance.
    """
    prov = backbone_key_inputs(backbone.provenance())
    return {"schema": schema.SCHEMA_VERSION, "backbone": prov, **value_options(cfg),
            "dataset_fingerprint": samples.fingerprint(), "split": samples.split}


def value_options(cfg: ExtractConfig) -> dict[str, Any]:
    """The options that change what a given backbone computes on given data."""
    return {"dtype": cfg.dtype, "views": cfg.views, "augment": cfg.augment,
            "augment_seed": cfg.seed if cfg.augment != "none" else None}


def backbone_options(cfg: ExtractConfig) -> dict[str, Any]:
    """What :func:`create_backbone` receives besides the spec."""
    return {"weights": cfg.weights, "pretrained": None if cfg.pretrained else False,
            "image_size": cfg.image_size, "pooling": cfg.pooling}


def request_key_inputs(cfg: ExtractConfig, *, backbone: Any, dataset: Any,
                       weights: Any = None) -> dict[str, Any]:
    """:func:`key_inputs` of ``cfg``'s first job as far as it is known before anything is
    loaded (the service's request keys): the backbone and data set as given (``backbone``:
    a spec; ``dataset``, ``weights``: what identifies a file) with the options that choose
    them, in place of their provenance and fingerprint; and the store's format.
    ``request_key`` is the recipe's version: bump it when the recipe changes."""
    return {"request_key": 2, "schema": schema.SCHEMA_VERSION, **value_options(cfg),
            "backbone": {"spec": backbone, **backbone_options(cfg), "weights": weights},
            "dataset": {"id": dataset, "options": cfg.dataset_options, "limit": cfg.limit,
                        "seed": cfg.seed if cfg.limit is not None else None},
            "split": cfg.splits[0], "format": cfg.format}


def extract(cfg: ExtractConfig, *, on_result: Callable[[ExtractResult], None] | None = None
            ) -> list[ExtractResult]:
    """Extract every backbone × data set × split in ``cfg``, loading each backbone once."""
    from featstore.data import load_dataset

    device = resolve_device(cfg.device)
    sets = [load_dataset(d, s, limit=cfg.limit, seed=cfg.seed, **cfg.dataset_options)
            for d in cfg.datasets for s in cfg.splits]
    results = []
    for spec in cfg.backbones:
        backbone = create_backbone(spec, **backbone_options(cfg))
        backbone.to(device)
        for samples in sets:
            result = extract_one(backbone, samples, cfg, device)
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _metadata(key: str, inputs: dict[str, Any], backbone: Backbone, samples: SampleSet,
              cfg: ExtractConfig, n_features: int) -> dict[str, Any]:
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "key": key,
        "complete": False,
        "n_samples": len(samples),
        "n_features": n_features,
        "n_views": cfg.views,
        "dtype": cfg.dtype,
        "codec": cfg.codec,
        "chunk_rows": cfg.chunk_rows,
        "backbone": {**backbone.provenance(), "num_features": n_features},
        "dataset": {
            "name": samples.name, "split": samples.split, "modality": samples.modality,
            "fingerprint": inputs["dataset_fingerprint"], "task": samples.task,
            "classes": samples.classes, "source": samples.source,
        },
        "views": {"count": cfg.views, "augment": cfg.augment,
                  "seed": cfg.seed if cfg.augment != "none" else None},
        "key_inputs": inputs,
        "versions": keys.library_versions(),
        "created_at": keys.now_iso(),
        "created_by": keys.created_by(),
    }


def _open_for_resume(path: Any, key: str) -> FeatureStore | None:
    """The incomplete store written for ``path`` (at its backend's working path) to
    continue, or None to start afresh."""
    target = backend_for(path).working_path(path)
    if not target.exists():
        return None
    try:
        store = open_store(target, "r+", allow_incomplete=True)
    except (StoreCorruptError, OSError) as err:
        log.warning("%s is unreadable (%s); starting this feature set again", target, err)
        _remove(target)
        return None
    if store.key != key:
        store.close()
        raise StoreCorruptError(f"{target} holds key {store.key}, not {key}; remove it.")
    return store


def _remove(path: Any) -> None:
    location.remove(path)


def _cached(path: Any, base: dict[str, Any], t0: float) -> ExtractResult | None:
    """The result of a cache hit on a complete, undamaged store at ``path``, or None.

    A damaged complete store is no hit. Opening it checks that every chunk file is
    there; its labels, sample ids and valid mask are checked against their digests and
    every chunk against its sha256 (unless FEATSTORE_VERIFY_READS=0). If only feature
    chunks are damaged, they are marked for re-extraction under the key's lease
    (``mark_for_reextraction``) and None is returned: the caller resumes and recomputes
    only them. Damaged labels or sample ids cannot be recomputed chunk by chunk: an
    error names --force.
    """
    from featstore.store.integrity import StoreDamagedError, mark_for_reextraction

    if not path.exists():
        return None
    try:
        done = open_store(path)
    except StoreDamagedError as err:
        damage = err
    except (StoreIncompleteError, StoreCorruptError):
        return None  # resume it, or start again (under the lease) if it cannot be read
    else:
        with done:
            if done.key != base["key"]:
                raise StoreCorruptError(
                    f"{path} holds the feature set of key {done.key}, not {base['key']}: it "
                    "was renamed or unpacked under a wrong name. Remove it with `featstore rm`.")
            try:
                valid, _, _ = done.valid, done.labels, done.sample_ids  # checked reads
                done.check_chunks()
                return ExtractResult(**base, shape=list(done.shape), cached=True,
                                     n_invalid=int((~valid).sum()),
                                     seconds=time.perf_counter() - t0)
            except StoreDamagedError as err:
                damage = err
    if damage.array in (schema.LABELS, schema.SAMPLE_IDS):
        raise damage  # its message says: extract again with --force
    chunks = mark_for_reextraction(path)  # raises if more than feature chunks is damaged
    if chunks:
        log.warning("repairing %s: %d damaged chunk(s) %s are extracted again, the other "
                    "chunks are kept", path, len(chunks), chunks[:10])
    return None  # None from mark_for_reextraction: another writer holds the key's lease


def extract_one(backbone: Backbone, samples: SampleSet, cfg: ExtractConfig,
                device: torch.device) -> ExtractResult:
    """One feature set: cache hit, resume, or a full run."""
    if backbone.modality != samples.modality:
        raise ConfigError(
            f"Backbone {backbone.id} reads {backbone.modality}s but data set {samples.name!r} "
            f"holds {samples.modality}s. Pair image backbones with image data and text with text."
        )
    if cfg.augment != "none" and samples.modality != "image":
        raise ConfigError("--augment train applies to image data only.")
    t0 = time.perf_counter()
    inputs = key_inputs(backbone, samples, cfg)
    key = keys.content_key(inputs)
    root = Root(cfg.root)
    path = root.path_for(key, cfg.format)
    base = dict(key=key, path=str(path), backbone=backbone.id, dataset=samples.name,
                split=samples.split)
    from featstore.store.root import clear_damaged, is_damaged

    # A damaged set (no usable metadata: its writer was killed first) is no cache hit:
    # it is replaced under the lease.
    if not cfg.force and not is_damaged(path):
        hit = _cached(path, base, t0)
        if hit is not None:
            log.info("cache hit: %s %s/%s is %s", backbone.id, samples.name, samples.split, path)
            return hit
    location.makedirs(root.path)
    force = cfg.force

    def finished(holder: Any) -> ExtractResult | None:
        """The other writer's result, once it has completed the set (``--force`` waits
        for the lease itself instead)."""
        hit = _cached(path, base, t0) if not force and not is_damaged(path) else None
        if hit is not None:
            hit.waited_seconds = round(time.perf_counter() - t0, 3)
        return hit

    # One writer per key, across processes and machines sharing the root.
    while True:
        try:
            with hold_lease(root.path, key, seconds=cfg.lease_seconds, on_wait=finished,
                            what=f"{backbone.id} {samples.name}/{samples.split} (key {key})",
                            doing="extracted") as lease:
                # A key folder without usable metadata (a writer killed before writing
                # it, or files removed by hand) must not block the key forever.
                clear_damaged(path)
                return _extract_locked(backbone, samples, cfg, device, lease, path, key,
                                       inputs, base, t0, force=force)
        except FinishedMeanwhile as done:
            return done.result
        except LeaseLostError as err:
            # Another writer took over (this one stalled): wait for it and reuse its
            # result instead of failing; committed chunks are never lost.
            log.warning("%s Waiting for the new writer instead.", err)
            force = False


def _extract_locked(backbone: Backbone, samples: SampleSet, cfg: ExtractConfig,
                    device: torch.device, lease: Lease, path: Any, key: str,
                    inputs: dict[str, Any], base: dict[str, Any], t0: float, *,
                    force: bool) -> ExtractResult:
    """Extract (or resume) one feature set while holding its lease."""
    if force:
        _remove(path)
        _remove(backend_for(path).working_path(path))
    else:
        hit = _cached(path, base, t0)  # finished by another writer just before we got the lease
        if hit is not None:
            return hit
    store = _open_for_resume(path, key)
    if store is not None:
        store.discard_stray_files()  # temporary files of writes a kill interrupted
    if store is None:
        n_features = getattr(backbone, "num_features", None) or _probe_dim(backbone, samples)
        store = create_store(
            path, metadata=_metadata(key, inputs, backbone, samples, cfg, n_features),
            n_features=n_features, n_views=cfg.views, dtype=cfg.dtype,
            chunk_rows=cfg.chunk_rows, sample_ids=samples.sample_ids, labels=samples.labels,
            codec=cfg.codec)
    with store:
        done = store.committed_chunks()
        todo = [c for c in range(store.n_chunks) if c not in done]
        if done:
            log.info("resuming %s: %d of %d chunks already committed", store.path, len(done),
                     store.n_chunks)
        run = _run_chunks(backbone, samples, store, todo, cfg, device, check=lease.check)
        lease.renew()  # raises LeaseLostError if another writer took over meanwhile
        invalid_total = int((~store.valid).sum())
        seconds = time.perf_counter() - t0
        store.mark_complete(extraction={
            "seconds": round(seconds, 3), "device": str(device), "batch_size": cfg.batch_size,
            "n_invalid": invalid_total, "resumed_chunks": len(done),
        })
        return ExtractResult(**{**base, "path": str(store.path)}, shape=list(store.shape),
                             cached=False, resumed_chunks=len(done), computed_chunks=len(todo),
                             n_invalid=invalid_total, invalid=run["invalid"], seconds=seconds,
                             samples_per_second=run["rate"])


def _probe_dim(backbone: Backbone, samples: SampleSet) -> int:
    """D for backbones that learn it from their first answer (HTTP APIs)."""
    out = backbone.encode(backbone.collate([backbone.transform(False)(samples.load(0))]))
    return int(out.shape[-1])


def _run_chunks(backbone: Backbone, samples: SampleSet, store: FeatureStore, todo: list[int],
                cfg: ExtractConfig, device: torch.device, *,
                check: Callable[[], None]) -> dict[str, Any]:
    """The loop: decode (workers) → forward (here) → write whole chunks (writer thread)."""
    from tqdm.auto import tqdm

    n, rows, k, d = store.n_samples, store.chunk_rows, cfg.views, store.n_features
    batches = loader.chunk_batches(todo, n, rows, cfg.batch_size)
    workers = 0 if (backbone.remote or samples.modality == "text") else default_workers(
        cfg.num_workers, device)
    augment = cfg.augment == "train"
    stream = loader.iterate(samples, backbone.transform(train=augment), batches, views=k,
                            augment=augment, seed=cfg.seed, num_workers=workers,
                            pin_memory=device.type == "cuda")
    buffers: dict[int, _ChunkBuffer] = {}
    invalid: list[dict[str, str]] = []
    total = sum(len(b) for b in batches)
    writer = ChunkWriter(store, check=check)
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="sample", desc=f"{backbone.id} {samples.name}/{samples.split}",
               disable=None if cfg.progress else True, dynamic_ncols=True, leave=False)
    try:
        for batch in stream:
            ok = [(i, x) for i, x, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    if cfg.strict:
                        raise SampleLoadError(
                            f"Sample {samples.sample_ids[i]!r} of {samples.name} could not be "
                            f"read: {err}. Fix or remove it, or drop --strict to record it as "
                            "invalid and go on.")
                    if len(invalid) < MAX_LISTED_INVALID:
                        invalid.append({"sample_id": samples.sample_ids[i], "error": err})
            feats = _encode(backbone, [x for _, x in ok], k) if ok else None
            if feats is not None and feats.shape[-1] != d:
                raise DimensionMismatchError(
                    f"{backbone.id} returned {feats.shape[-1]}-d features, but the store at "
                    f"{store.path} holds {d}-d ones. Use --force to extract it again.")
            for j, (i, _) in enumerate(ok):
                buf = _chunk_buffer(buffers, i // rows, n, rows, k, d)
                buf.features[i % rows] = feats[j]
                buf.valid[i % rows] = True
            for i, _, _ in batch:
                c = i // rows
                buf = _chunk_buffer(buffers, c, n, rows, k, d)
                buf.filled += 1
                if buf.filled == len(buf.valid):  # whole chunk: hand it to the writer
                    writer.put(c, buf.features, buf.valid)
                    del buffers[c]
            bar.update(len(batch))
    except BaseException:
        # Commit what is queued (a rerun resumes from it) but report the first error.
        bar.close()
        try:
            writer.close()
        except BaseException:
            log.debug("writer error after a failed extraction", exc_info=True)
        raise
    bar.close()
    writer.close()
    seconds = time.perf_counter() - t0
    return {"invalid": invalid, "rate": (total / seconds) if seconds > 0 and total else None}


def default_workers(requested: int | None, device: torch.device) -> int:
    """Decode workers: as asked; else many for a GPU, and none on a CPU of 2 cores,
    where a worker only takes a core from the forward pass (benchmarks/extract_throughput.py)."""
    if requested is not None:
        return requested
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return min(8, cpus)
    return 0 if cpus <= 2 else min(4, cpus // 2)


@dataclass
class _ChunkBuffer:
    """Rows of one stored chunk, filled batch by batch (invalid rows stay zero)."""

    features: np.ndarray
    valid: np.ndarray
    filled: int = 0


def _chunk_buffer(buffers: dict[int, _ChunkBuffer], c: int, n: int, rows: int, k: int,
                  d: int) -> _ChunkBuffer:
    if c not in buffers:
        start, stop = schema.chunk_bounds(c, n, rows)
        shape = (stop - start, k, d) if k > 1 else (stop - start, d)
        buffers[c] = _ChunkBuffer(np.zeros(shape, np.float32), np.zeros(stop - start, bool))
    return buffers[c]


def _encode(backbone: Backbone, items: list[Any], views: int) -> np.ndarray:
    if views > 1:
        flat = [v for views_of_one in items for v in views_of_one]
        out = backbone.encode(backbone.collate(flat)).numpy()
        return out.reshape(len(items), views, -1)
    return backbone.encode(backbone.collate(items)).numpy()
