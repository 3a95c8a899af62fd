"""`featstore extract`: run each backbone once over data set splits, into a root."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch

from featstore.utils import keys
from featstore.backbones import Backbone, backbone_key_inputs, create_backbone
from featstore.data import SampleSet
from featstore.utils.devices import resolve_device
from featstore.errors import ConfigError, StoreCorruptError, StoreIncompleteError
from featstore.store import (FeatureStore, Root, backend_for, create_store, location, open_store,
                             schema)
from featstore.store.lease import FinishedMeanwhile, Lease, LeaseLostError, hold_lease
from featstore.extract import chunks
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
    """The options that change what a given backbone computes on given data.

    A precision other than float32 is among them (keys of float32 sets, the default,
    stay as they were before the option existed); the memory format, length buckets
    and torch.compile change at most the last float bits and are recorded in the
    metadata only (docs/extract.md, "Speed options")."""
    precision = {"precision": cfg.precision} if cfg.precision != "float32" else {}
    return {"dtype": cfg.dtype, "views": cfg.views, "augment": cfg.augment,
            "augment_seed": cfg.seed if cfg.augment != "none" else None, **precision}


def backbone_options(cfg: ExtractConfig) -> dict[str, Any]:
    """What :func:`create_backbone` receives besides the spec (embedding-API options
    only when set: other backbones refuse them)."""
    from featstore.backbones.registry import API_OPTIONS

    api = {name: getattr(cfg, name) for name in API_OPTIONS if getattr(cfg, name) is not None}
    return {"weights": cfg.weights, "pretrained": None if cfg.pretrained else False,
            "image_size": cfg.image_size, "pooling": cfg.pooling, **api}


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


#: How the chunks still to do are computed and written, under the key's lease:
#: ``engine(backbone, samples, store, todo, cfg, device, lease)`` returns ``{"invalid":
#: first failed samples, "rate": samples/s, "extraction": what the metadata records}``.
#: This process (:func:`local_engine`) or Ray actors (:mod:`featstore.extract.ray_engine`).
Engine = Callable[..., dict[str, Any]]


def extract(cfg: ExtractConfig, *, on_result: Callable[[ExtractResult], None] | None = None
            ) -> list[ExtractResult]:
    """Extract every backbone × data set × split in ``cfg``, loading each backbone once
    (with ``cfg.ray``: once here, for the key, and once in each Ray actor)."""
    from featstore.data import load_dataset

    # With Ray the actors compute; this process only needs the model's description.
    device = torch.device("cpu") if cfg.ray else resolve_device(cfg.device)
    pool = None
    if cfg.ray:  # first: a missing Ray or a wrong address is said before any loading
        from featstore.extract.ray_engine import RayPool

        pool = RayPool(cfg, backbone_options(cfg))
    threads = torch.get_num_threads()
    results = []
    try:
        refs = [(d, s) for d in cfg.datasets for s in cfg.splits]
        sets = [load_dataset(d, s, limit=cfg.limit, seed=cfg.seed, **cfg.dataset_options)
                for d, s in refs]
        if cfg.threads and not cfg.ray:
            torch.set_num_threads(cfg.threads)  # pinned: it changes the last bits
        for spec in cfg.backbones:
            backbone = create_backbone(spec, **backbone_options(cfg))
            backbone.to(device)
            for (d, s), samples in zip(refs, sets):
                engine = pool.engine(spec, d, s) if pool is not None else None
                result = extract_one(backbone, samples, cfg, device, engine=engine)
                results.append(result)
                if on_result is not None:
                    on_result(result)
    finally:
        torch.set_num_threads(threads)
        if pool is not None:
            pool.close()
    return results


def _metadata(key: str, inputs: dict[str, Any], backbone: Backbone, samples: SampleSet,
              cfg: ExtractConfig, n_features: int) -> dict[str, Any]:
    from featstore.extract.fingerprint import FINGERPRINT

    # The model's fingerprint (APIs: one probe request at the start of the run) and its
    # settings that leave the values alone; neither is in the key.
    own = {FINGERPRINT: backbone.fingerprint(), "backbone_settings": backbone.settings()}
    return {
        **{name: value for name, value in own.items() if value},
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


def _open_for_resume(path: Any, key: str, backbone: Backbone) -> FeatureStore | None:
    """The incomplete store written for ``path`` (at its backend's working path) to
    continue, or None to start afresh. A :class:`ModelChangedError` if the model behind
    ``backbone`` is no longer the one that computed its chunks."""
    from featstore.extract.fingerprint import check_same_model

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
    try:
        check_same_model(backbone, store.metadata, target, sorted(store.committed_chunks()))
    except BaseException:
        store.close()
        raise
    return store


def _remove(path: Any) -> None:
    location.remove(path)


def _cached(path: Any, base: dict[str, Any], t0: float, *, model: Backbone | None = None
            ) -> ExtractResult | None:
    """The result of a cache hit on a complete, undamaged store at ``path``, or None.
    With ``model``, a hit is first checked to come from the model behind it now
    (``check_model``; a :class:`ModelChangedError` if not).

    A damaged complete store is no hit. Opening it checks that every chunk file is
    there; its labels, sample ids and valid mask are checked against their digests and
    every chunk against its sha256 (unless FEATSTORE_VERIFY_READS=0). If only feature
    chunks are damaged, they are marked for re-extraction under the key's lease
    (``mark_for_reextraction``) and None is returned: the caller resumes and recomputes
    only them. Damaged labels or sample ids cannot be recomputed chunk by chunk: an
    error names --force.
    """
    from featstore.extract.fingerprint import check_same_model
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
                if model is not None:
                    check_same_model(model, done.metadata, path)
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
                device: torch.device, *, engine: Engine | None = None) -> ExtractResult:
    """One feature set: cache hit, resume, or a full run (its chunks computed by
    ``engine``, default :func:`local_engine`)."""
    if backbone.modality != samples.modality:
        raise ConfigError(
            f"Backbone {backbone.id} reads {backbone.modality}s but data set {samples.name!r} "
            f"holds {samples.modality}s. Pair image backbones with image data and text with text."
        )
    if cfg.augment != "none" and samples.modality != "image":
        raise ConfigError("--augment train applies to image data only.")
    t0 = time.perf_counter()
    # A precision or compile the backbone or device cannot do is refused before any work
    # (with Ray, by the actors on their own devices: this process holds the model on CPU).
    if not cfg.ray:
        backbone.configure(precision=cfg.precision, compile=cfg.compile)
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
        hit = _cached(path, base, t0, model=backbone if cfg.check_model else None)
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
                                       inputs, base, t0, force=force,
                                       engine=engine or local_engine)
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
                    force: bool, engine: Engine) -> ExtractResult:
    """Extract (or resume) one feature set while holding its lease."""
    if force:
        _remove(path)
        _remove(backend_for(path).working_path(path))
    else:
        hit = _cached(path, base, t0)  # finished by another writer just before we got the lease
        if hit is not None:
            return hit
    store = _open_for_resume(path, key, backbone)
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
        run = engine(backbone, samples, store, todo, cfg, device, lease)
        lease.renew()  # raises LeaseLostError if another writer took over meanwhile
        invalid_total = int((~store.valid).sum())
        seconds = time.perf_counter() - t0
        store.mark_complete(extraction={
            "seconds": round(seconds, 3), "device": str(device), "batch_size": cfg.batch_size,
            "n_invalid": invalid_total, "resumed_chunks": len(done), **run["extraction"],
            # How it ran where that leaves the values alone (at most the last float bits):
            # length buckets (texts), memory format, precision, torch.compile.
            "length_buckets": cfg.length_buckets, "backbone_settings": backbone.settings(),
        })
        return ExtractResult(**{**base, "path": str(store.path)}, shape=list(store.shape),
                             cached=False, resumed_chunks=len(done), computed_chunks=len(todo),
                             n_invalid=invalid_total, invalid=run["invalid"], seconds=seconds,
                             samples_per_second=run["rate"])


def _probe_dim(backbone: Backbone, samples: SampleSet) -> int:
    """D for backbones that learn it from their first answer (HTTP APIs)."""
    out = backbone.encode(backbone.collate([backbone.transform(False)(samples.load(0))]))
    return int(out.shape[-1])


def local_engine(backbone: Backbone, samples: SampleSet, store: FeatureStore, todo: list[int],
                 cfg: ExtractConfig, device: torch.device, lease: Lease) -> dict[str, Any]:
    """The :data:`Engine` of one process: :func:`_run_chunks` here, with torch's thread
    count (pinned with ``cfg.threads``) recorded: it can change the last bits."""
    run = _run_chunks(backbone, samples, store, todo, cfg, device, check=lease.check)
    return {**run, "extraction": {"engine": "local", "threads": torch.get_num_threads(),
                                  "num_workers": run.pop("workers")}}


def _run_chunks(backbone: Backbone, samples: SampleSet, store: FeatureStore, todo: list[int],
                cfg: ExtractConfig, device: torch.device, *,
                check: Callable[[], None]) -> dict[str, Any]:
    """The loop: decode (workers) → forward (here, :func:`chunks.compute_chunks`) → write
    whole chunks (writer thread)."""
    from tqdm.auto import tqdm

    workers = 0 if (backbone.remote or samples.modality == "text") else default_workers(
        cfg.num_workers, device)
    invalid: list[dict[str, str]] = []
    total = sum(len(range(*schema.chunk_bounds(c, store.n_samples, store.chunk_rows)))
                for c in todo)
    writer = ChunkWriter(store, check=check)
    t0 = time.perf_counter()
    bar = tqdm(total=total, unit="sample", desc=f"{backbone.id} {samples.name}/{samples.split}",
               disable=None if cfg.progress else True, dynamic_ncols=True, leave=False)
    try:
        for done in chunks.compute_chunks(backbone, samples, todo, n_features=store.n_features,
                                          chunk_rows=store.chunk_rows, cfg=cfg, device=device,
                                          num_workers=workers, on_batch=bar.update):
            invalid += done.invalid[:MAX_LISTED_INVALID - len(invalid)]
            writer.put(done.index, done.features, done.valid)
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
    return {"invalid": invalid, "rate": (total / seconds) if seconds > 0 and total else None,
            "workers": workers}


def default_workers(requested: int | None, device: torch.device) -> int:
    """Image decode workers (DataLoader processes): as asked; else by device and cores.

    Without workers, the next batch is still decoded and collated in a thread while
    the forward pass runs (:func:`featstore.extract.loader.ahead`); a worker process
    pays for itself only where a core is left over.

    * CPU: the forward pass keeps torch's threads (one per core) busy, and decoding
      (PIL + resize) costs a small fraction of a convnet's forward per image. With 2
      cores, 0 workers: a worker takes a core from the forward pass (measured,
      benchmarks/extract_vs_peers.py and extract_throughput.py). From 4 cores, one
      worker per 4 cores (4 cores: 1, 16 cores: 4): enough to keep decoding off the
      forward's cores without taking many of them. Not measured above 2 cores (this
      machine has 2): a rule, stated so that it can be checked.
    * CUDA: the forward runs on the GPU and decoding is what limits a run, so every
      core but the main process's decodes, up to 8 (2 cores: 1, 4: 3, 16: 8).
    """
    if requested is not None:
        return requested
    cpus = os.cpu_count() or 1
    if device.type == "cuda":
        return max(0, min(8, cpus - 1))
    return 0 if cpus <= 2 else min(4, cpus // 4)
