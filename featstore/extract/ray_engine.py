"""`featstore extract --ray ADDRESS`: whole chunks computed by Ray actors on a cluster.

The driver (the process running ``featstore extract``) does everything that decides
what a feature set is — the content key, the cache check, the lease, creating the set,
resuming it, the commit — exactly as the single-process path does
(:mod:`featstore.extract.pipeline`). This module only replaces "compute the chunks still
to do and write them":

* one :class:`ChunkWorker` actor per device slot of the cluster (``num_gpus=1`` on GPUs, else
  ``num_cpus=threads``) loads each backbone **once** and computes whole chunks with
  :func:`featstore.extract.chunks.compute_chunks` — the function the single-process
  path uses, so a chunk is batched and computed the same way everywhere;
* the actor writes its chunk into the shared set (``store.write_chunk``: the chunk's
  own files and its own digest file, so two actors never write the same file) and
  returns a receipt ``{index, rows, sha256, ...}``;
* the driver hands out one chunk at a time per ready actor, holds the key's lease
  meanwhile, checks that every chunk has exactly one consistent receipt and that the
  digests recorded in the set are the receipts', and only then writes the commit.

Retries: a chunk whose actor died (a node lost, an actor killed, out of memory) is
given to another actor, up to :data:`MAX_CHUNK_ATTEMPTS` times; Ray restarts the dead
actor (``max_restarts``) and it gets work again once it answers. A chunk that raises an
exception (bad data with ``--strict``, a backbone error) fails the job at once: the same
input would fail the same way on any node. Ray's own task retries are off
(``max_task_retries=0``) so that the driver alone decides what is retried.
"""

from __future__ import annotations

import collections
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from featstore.errors import BackboneError, ConfigError, FeatstoreError, StoreCorruptError

log = logging.getLogger(__name__)

#: How often one chunk may lose its actor (a dead node or process) before the job fails.
MAX_CHUNK_ATTEMPTS = 4
#: Restarts of one actor (Ray's ``max_restarts``); each restart reloads the backbone.
MAX_ACTOR_RESTARTS = 8
#: Seconds without any ready actor (none placed, all restarting) before the job fails.
NO_ACTOR_SECONDS = 600.0
#: Seconds to wait for one actor call that Ray reports finished (a stuck transfer).
GET_TIMEOUT = 120.0
#: Most failed samples a receipt lists (the store's ``valid`` array has them all).
MAX_LISTED_INVALID = 20
#: Test-only fault injection: ``CHUNK:MARKER`` makes the actor that is about to write
#: chunk CHUNK exit at once (``os._exit``) if the file MARKER does not exist yet, after
#: creating it — so exactly one crash happens. Read by the driver, passed to its actors;
#: unset (always, outside tests), it does nothing.
CRASH_HOOK_ENV = "FEATSTORE_TEST_ACTOR_EXIT"


@dataclass
class ChunkJob:
    """What an actor needs to compute and write chunks of one feature set (picklable)."""

    spec: str                 # the backbone spec, built with the config's options
    dataset: str              # the data set reference as given to `extract`
    split: str
    path: str                 # the set being written (its working path)
    root: str                 # the root holding the key's lease
    key: str
    lease_token: str          # the driver's lease: the actor writes only while it holds
    identity: str             # backbone provenance + sample ids, as the driver saw them
    n_features: int
    chunk_rows: int


def identity_of(backbone: Any, samples: Any) -> str:
    """A digest of what the actor must rebuild identically: the backbone's provenance and
    the data set's sample ids (cheap, unlike the content fingerprint of every sample)."""
    from featstore.backbones import backbone_key_inputs
    from featstore.utils import keys

    return keys.content_key({"backbone": backbone_key_inputs(backbone.provenance()),
                             "dataset": samples.name, "split": samples.split,
                             "ids": list(samples.sample_ids)})


class ChunkWorker:
    """A Ray actor: computes and writes whole chunks; keeps one backbone loaded."""

    def __init__(self, cfg: dict[str, Any], options: dict[str, Any], threads: int,
                 crash_hook: str | None = None):
        from featstore.extract.config import ExtractConfig
        from featstore.utils.devices import resolve_device

        # Pinned before any torch work: the thread count changes float results.
        torch.set_num_threads(threads)
        self.threads = threads
        self.cfg = ExtractConfig(**{**cfg, "ray": None, "progress": False})
        self.device = resolve_device(self.cfg.device)
        self.crash_hook = crash_hook
        self.options = options  # what create_backbone receives besides the spec
        self._backbone: tuple[str, Any] | None = None
        self._samples: dict[tuple[str, str], Any] = {}
        self._store: tuple[str, Any] | None = None
        self._identities: dict[tuple[str, str, str], str] = {}

    def ping(self) -> dict[str, Any]:
        """Where this actor runs (answers once it is placed and started)."""
        import socket

        return {"host": socket.gethostname(), "pid": os.getpid(), "device": str(self.device)}

    def _backbone_for(self, spec: str) -> Any:
        from featstore.backbones import create_backbone

        if self._backbone is None or self._backbone[0] != spec:
            self._backbone = None  # free the previous model first
            backbone = create_backbone(spec, **self.options)
            backbone.to(self.device)
            self._backbone = (spec, backbone)
        return self._backbone[1]

    def _samples_for(self, dataset: str, split: str) -> Any:
        from featstore.data import load_dataset

        if (dataset, split) not in self._samples:
            cfg = self.cfg
            self._samples[(dataset, split)] = load_dataset(
                dataset, split, limit=cfg.limit, seed=cfg.seed, **cfg.dataset_options)
        return self._samples[(dataset, split)]

    def _store_for(self, path: str) -> Any:
        from featstore.store import open_store

        if self._store is None or self._store[0] != path:
            if self._store is not None:
                self._store[1].close()
            self._store = (path, open_store(path, "r+", allow_incomplete=True))
        return self._store[1]

    def compute(self, job: ChunkJob, index: int) -> dict[str, Any]:
        """Compute chunk ``index`` of ``job``, write it, return its receipt."""
        from featstore.extract import chunks

        t0 = time.perf_counter()
        backbone = self._backbone_for(job.spec)
        samples = self._samples_for(job.dataset, job.split)
        ref = (job.spec, job.dataset, job.split)
        if ref not in self._identities:  # once per set: it hashes every sample id
            self._identities[ref] = identity_of(backbone, samples)
        if self._identities[ref] != job.identity:
            raise ConfigError(
                f"On this Ray worker, {job.spec} or data set {job.dataset!r}/{job.split} is "
                "not what the driver loaded (other weights, files or sample ids). Every node "
                "must see the same data path and backbone files: use a shared folder or an "
                "s3:// URL.")
        # Decode workers only beside a GPU (as in one process); a CPU actor decodes in
        # its own slot, so that the cluster's CPU accounting stays true.
        workers = 0 if (backbone.remote or samples.modality == "text"
                        or self.device.type != "cuda") else (
            self.cfg.num_workers if self.cfg.num_workers is not None
            else min(8, os.cpu_count() or 1))
        (done,) = chunks.compute_chunks(
            backbone, samples, [index], n_features=job.n_features, chunk_rows=job.chunk_rows,
            cfg=self.cfg, device=self.device, num_workers=workers)
        self._check_lease(job)
        _maybe_crash(self.crash_hook, index)
        digest = self._store_for(job.path).write_chunk(done.index, done.features, done.valid)
        return {"index": done.index, "rows": len(done.valid), "sha256": digest,
                "invalid": done.invalid[:MAX_LISTED_INVALID], "n_invalid": len(done.invalid),
                "threads": torch.get_num_threads(), "device": str(self.device),
                "pid": os.getpid(), "seconds": round(time.perf_counter() - t0, 3)}

    @staticmethod
    def _check_lease(job: ChunkJob) -> None:
        """Write only while the driver that sent this chunk still holds the key's lease (a
        driver killed and replaced must not have its actors write into the new run)."""
        from featstore.store.lease import Lease, LeaseLostError

        holder = Lease(job.root, job.key).holder()
        if holder is None or holder.token != job.lease_token or holder.released:
            raise LeaseLostError(f"The lease on {job.key} is no longer held by the driver "
                                 "that sent this chunk; not writing it.")


def _maybe_crash(hook: str | None, index: int) -> None:
    """The test-only crash of :data:`CRASH_HOOK_ENV` (nothing when unset)."""
    if not hook:
        return
    chunk, _, marker = hook.partition(":")
    if int(chunk) == index and marker and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(f"{os.getpid()}\n")
        os._exit(1)


@dataclass
class _Run:
    """The driver's book-keeping for one feature set."""

    queue: collections.deque[int]
    busy: dict[Any, tuple[int, int]] = field(default_factory=dict)    # ref -> (actor, chunk)
    waking: dict[Any, int] = field(default_factory=dict)              # ping ref -> actor
    receipts: dict[int, dict[str, Any]] = field(default_factory=dict)
    attempts: collections.Counter[int] = field(default_factory=collections.Counter)
    invalid: list[dict[str, str]] = field(default_factory=list)


class RayPool:
    """The actors of one ``extract --ray`` call, shared by all of its feature sets."""

    def __init__(self, cfg: Any, backbone_options: dict[str, Any]):
        from featstore.utils.cluster import connect

        self.ray = connect(cfg.ray)
        self.cfg = cfg
        self.backbone_options = backbone_options
        self.threads = int(cfg.threads or 1)
        self.slots, self.options = self._slots()  # checked now: errors before any loading
        self.actors: list[Any] = []        # started by the first set with chunks to do
        self.ready: list[int] = []         # actors known to be up and idle
        self.waking: dict[Any, int] = {}   # ping -> actor, for actors not yet (again) up
        self.gone: set[int] = set()        # actors dead for good (restarts used up)
        self.asleep: dict[int, float] = {}  # actor -> when to ping it again
        self.failed_pings: collections.Counter[int] = collections.Counter()
        self.devices: set[str] = set()

    def _slots(self) -> tuple[int, dict[str, Any]]:
        """How many actors, with which resources each: one per slot of the whole cluster
        (an actor that cannot be placed yet, its slot busy, gets no work until it answers
        its ping, and costs nothing meanwhile)."""
        cfg = self.cfg
        total = self.ray.cluster_resources()
        wants_gpu = cfg.device == "auto" or cfg.device.startswith("cuda")
        if wants_gpu and total.get("GPU", 0) >= 1:
            n, options = int(total["GPU"]), {"num_gpus": 1, "num_cpus": 1}
        elif cfg.device.startswith("cuda"):
            raise ConfigError(f"--device {cfg.device} with --ray: the cluster at {cfg.ray} has "
                              "no GPU. Use --device auto (or cpu), or add GPU nodes.")
        else:
            if total.get("CPU", 0) < self.threads:
                raise ConfigError(
                    f"--threads {self.threads}: the Ray cluster at {cfg.ray} has only "
                    f"{total.get('CPU', 0):g} CPUs. Lower --threads.")
            n, options = int(total["CPU"] // self.threads), {"num_cpus": self.threads}
        return n, options

    def _start(self) -> None:
        hook = os.environ.get(CRASH_HOOK_ENV) or None
        remote = self.ray.remote(ChunkWorker).options(
            max_restarts=MAX_ACTOR_RESTARTS, max_task_retries=0, scheduling_strategy="SPREAD",
            **self.options)
        cfg_dict = {**self.cfg.as_dict(), "ray": None}
        log.info("starting %d Ray actor(s) with %s each", self.slots, self.options)
        self.actors = [remote.remote(cfg_dict, self.backbone_options, self.threads, hook)
                       for _ in range(self.slots)]
        self.waking = {actor.ping.remote(): i for i, actor in enumerate(self.actors)}

    def close(self) -> None:
        """Stop the actors (their chunks are all written or given up)."""
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone  # noqa: BLE001
                log.debug("killing an actor failed", exc_info=True)
        self.actors = []

    # -- one feature set -----------------------------------------------------------------
    def engine(self, spec: str, dataset: str, split: str) -> Callable[..., dict[str, Any]]:
        """The :data:`featstore.extract.pipeline.Engine` computing the chunks of the sets of
        backbone ``spec`` on ``dataset``/``split`` with this pool's actors (which rebuild
        both from these references and the config)."""

        def run_chunks(backbone: Any, samples: Any, store: Any, todo: list[int], cfg: Any,
                       device: Any, lease: Any) -> dict[str, Any]:
            from tqdm.auto import tqdm

            from featstore.store import Root

            job = ChunkJob(spec, dataset, split, path=str(store.path),
                           root=str(Root(cfg.root).path), key=store.key,
                           lease_token=lease.token, identity=identity_of(backbone, samples),
                           n_features=store.n_features, chunk_rows=store.chunk_rows)
            rows = sum(min(store.chunk_rows, store.n_samples - c * store.chunk_rows)
                       for c in todo)
            t0 = time.perf_counter()
            with tqdm(total=rows, unit="sample", leave=False, dynamic_ncols=True,
                      desc=f"{backbone.id} {samples.name}/{samples.split} (ray)",
                      disable=None if cfg.progress else True) as bar:
                receipts = self.run(job, todo, check=lease.check, on_chunk=bar.update)
            check_receipts(store, todo, receipts)
            seconds = time.perf_counter() - t0
            invalid = [bad for c in sorted(receipts) for bad in receipts[c]["invalid"]]
            return {"invalid": invalid[:MAX_LISTED_INVALID],
                    "rate": rows / seconds if rows and seconds > 0 else None,
                    "extraction": {"engine": "ray", "threads": self.threads,
                                   "actors": self.slots,
                                   "device": ",".join(sorted(self.devices)) or "cpu"}}

        return run_chunks

    def run(self, job: ChunkJob, todo: list[int], *, check: Callable[[], None],
            on_chunk: Callable[[int], None]) -> dict[str, Any]:
        """Have the actors compute and write ``todo``; return the receipts, by chunk."""
        if not todo:
            return {}
        if not self.actors:
            self._start()
        # Actors still busy with a chunk of an aborted earlier run: ready once they answer.
        lost = set(range(len(self.actors))) - set(self.ready) - set(self.waking.values()) \
            - set(self.asleep) - self.gone
        self.waking.update({self.actors[i].ping.remote(): i for i in lost})
        run = _Run(collections.deque(todo))
        last_ready = time.monotonic()
        while run.queue or run.busy:
            check()  # the lease: stop as soon as another writer may hold it
            while run.queue and self.ready:
                actor, chunk = self.ready.pop(), run.queue.popleft()
                run.busy[self.actors[actor].compute.remote(job, chunk)] = (actor, chunk)
            if len(self.gone) == len(self.actors):
                raise BackboneError("Every Ray actor of this job died and used up its "
                                    f"{MAX_ACTOR_RESTARTS} restarts; see the Ray logs.")
            self._wake_up()
            refs = list(run.busy) + list(self.waking)
            done = self.ray.wait(refs, num_returns=1, timeout=1.0)[0] if refs else []
            if not refs:
                time.sleep(0.2)
            for ref in done:
                if ref in self.waking:
                    self._woke(ref)
                else:
                    self._finished(ref, run, job, on_chunk)
            if self.ready or run.busy:
                last_ready = time.monotonic()
            elif time.monotonic() - last_ready > NO_ACTOR_SECONDS:
                raise BackboneError(
                    f"No Ray actor could be placed or restarted for {NO_ACTOR_SECONDS:.0f} s "
                    f"(the cluster at {self.cfg.ray} lacks free "
                    f"{'GPUs' if self.cfg.device.startswith('cuda') else 'slots'}?); "
                    "committed chunks are kept: rerun to resume.")
        return run.receipts

    def _woke(self, ref: Any) -> None:
        actor = self.waking.pop(ref)
        try:
            info = self.ray.get(ref, timeout=GET_TIMEOUT)
        except (self.ray.exceptions.RayError, TimeoutError):
            # A ping sent while Ray had not yet noticed the death fails even if the actor
            # is then restarted: ask again a second later; gone once restarts are used up.
            self.failed_pings[actor] += 1
            if self.failed_pings[actor] > MAX_ACTOR_RESTARTS + 1:
                log.warning("Ray actor %d is gone for good", actor)
                self.gone.add(actor)
            else:
                self.asleep[actor] = time.monotonic() + 1.0
            return
        self.failed_pings[actor] = 0
        self.devices.add(info["device"])
        self.ready.append(actor)

    def _wake_up(self) -> None:
        """Ping again the actors whose last ping failed a second ago."""
        now = time.monotonic()
        for actor, when in list(self.asleep.items()):
            if when <= now:
                del self.asleep[actor]
                self.waking[self.actors[actor].ping.remote()] = actor

    def _finished(self, ref: Any, run: _Run, job: ChunkJob,
                  on_chunk: Callable[[int], None]) -> None:
        exceptions = self.ray.exceptions
        actor, chunk = run.busy.pop(ref)
        try:
            receipt = self.ray.get(ref, timeout=GET_TIMEOUT)
        except exceptions.RayTaskError as err:
            raise _application_error(err, chunk, job) from None
        except (exceptions.RayError, TimeoutError) as err:
            # The actor (or its node) died or vanished: the chunk goes to another actor;
            # the actor is asked to answer once Ray has restarted it.
            run.attempts[chunk] += 1
            if run.attempts[chunk] >= MAX_CHUNK_ATTEMPTS:
                raise BackboneError(
                    f"Chunk {chunk} of {job.path} lost its Ray worker {MAX_CHUNK_ATTEMPTS} "
                    f"times ({type(err).__name__}); giving up. Committed chunks are kept: "
                    "rerun to resume. Check the nodes' memory and logs.") from None
            log.warning("chunk %d: its Ray actor died (%s); computing it again elsewhere",
                        chunk, type(err).__name__)
            run.queue.appendleft(chunk)
            self.waking[self.actors[actor].ping.remote()] = actor
            return
        self.ready.append(actor)
        _accept(run, receipt, chunk, job)
        on_chunk(int(receipt["rows"]))


def _accept(run: _Run, receipt: dict[str, Any], chunk: int, job: ChunkJob) -> None:
    """Record one receipt; a second one for a chunk must agree with the first."""
    if receipt["index"] != chunk:
        raise StoreCorruptError(f"A Ray actor answered chunk {receipt['index']} when asked "
                                f"for chunk {chunk} of {job.path}.")
    earlier = run.receipts.get(chunk)
    if earlier is not None and earlier["sha256"] != receipt["sha256"]:
        raise StoreCorruptError(
            f"Chunk {chunk} of {job.path} was computed twice with different results "
            f"({earlier['sha256'][:12]} vs {receipt['sha256'][:12]}): the workers differ "
            "(library versions, hardware). Align them, then extract again with --force.")
    run.receipts[chunk] = receipt
    run.invalid += receipt["invalid"][:MAX_LISTED_INVALID - len(run.invalid)]


def _application_error(err: Any, chunk: int, job: ChunkJob) -> Exception:
    """The exception a chunk raised in its actor, said once with where it happened (not
    retried: the same input fails the same way on every node)."""
    cause = getattr(err, "cause", None)
    where = f"(chunk {chunk} of {job.dataset}/{job.split}, on a Ray worker; not retried)"
    if isinstance(cause, FeatstoreError):
        if cause.args and isinstance(cause.args[0], str):
            cause.args = (f"{cause.args[0]} {where}",) + tuple(cause.args[1:])
        return cause
    if cause is None:
        return BackboneError(f"{job.spec} failed {where}: {err}")
    return BackboneError(f"{job.spec} failed {where}: {type(cause).__name__}: {cause}")


def check_receipts(store: Any, todo: list[int], receipts: dict[int, dict[str, Any]]) -> None:
    """Every chunk of ``todo`` has its receipt, and the set records the receipt's sha256
    for it (what an actor claims to have written is what the set holds)."""
    missing = sorted(set(todo) - set(receipts))
    if missing:
        raise StoreCorruptError(f"{store.path}: no receipt for chunks {missing[:10]}.")
    recorded = store.chunk_digests()
    wrong = [c for c in todo if recorded[c] != receipts[c]["sha256"]]
    if wrong:
        store.invalidate_chunks(wrong)  # recomputed by the next run
        raise StoreCorruptError(
            f"{store.path}: the recorded sha256 of chunks {wrong[:10]} differ from the "
            "receipts of the actors that wrote them (another writer interfered?). Extract "
            "again: only these chunks are recomputed.")
