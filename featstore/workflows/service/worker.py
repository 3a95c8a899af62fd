"""A worker of the extraction service: one process per device, started by `featstore serve`.

    python -m featstore.workflows.service.worker --queue Q --root ROOT --device cpu --name w0-cpu

It claims jobs from the queue, preferring those for a backbone it already holds (so a
backbone is loaded once per worker), runs each with
:func:`featstore.extract.pipeline.extract_one`, renews the job's lease from a thread
while it runs, and writes what it did to the job's log. An incomplete store left by a
worker that died is resumed from its committed chunks. SIGTERM or SIGINT stops it
cleanly: the job in hand goes back to the queue without using up an attempt.

What clients can read (a job's ``error`` and its log) never quotes a file: an error
message may hold a line of a data set, manifest or weights file (a parser names what it
could not parse), so clients get the error's class, the path they gave, what the
worker was doing and a generic description (:func:`public_error`); the full message and
traceback go only to the worker's own log, which the service's operator reads.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections import OrderedDict
from types import FrameType
from typing import Any

from featstore import errors
from featstore.errors import FeatstoreError
from featstore.workflows.service.queue import JobQueue

log = logging.getLogger("featstore.workflows.service.worker")  # also when run as __main__

#: Seconds between polls of an empty queue.
POLL_SECONDS = 0.5
#: A failed attempt is retried after this many seconds times the attempts used.
RETRY_DELAY = 1.0
#: Loggers whose records a job's log (served to clients) takes: the worker's own lines
#: and the pipeline's and store's (keys, chunks, leases). Data set and backbone modules
#: may quote their files, so their records go to the worker's log only.
PUBLIC_LOGGERS = ("featstore.workflows.service", "featstore.extract", "featstore.store")
#: What a client is told of an error, by class (the first match in this order).
DESCRIPTIONS: tuple[tuple[type[BaseException], str], ...] = (
    (errors.UnknownBackboneError, "the backbone spec names no backbone this service can load"),
    (errors.UnknownDatasetError, "the data set is not one this service can read"),
    (errors.MissingAssetError, "a model or data set the job needs is not installed here"),
    (errors.MissingDependencyError, "a Python package the job needs is not installed here"),
    (errors.DataError, "the data set could not be read as asked: its format, columns, "
                       "labels or a sample did not fit"),
    (errors.DimensionMismatchError, "the backbone's features do not fit the stored set's"),
    (errors.BackboneError, "the backbone could not be built or its weights not loaded"),
    (errors.ConfigError, "the job's options do not fit this backbone or data set"),
    (errors.DiskFullError, "the service's disk is full"),
    (errors.StoreCorruptError, "a feature set in the service's root is damaged"),
    (errors.EmbeddingAPIError, "the embeddings API could not be reached or kept failing"),
    (MemoryError, "the worker ran out of memory"),
    (UnicodeError, "a file is not in the text encoding it was read with"),
    (OSError, "a file could not be read or written"),
    (ValueError, "a value in the data, the weights or the options could not be used"),
)


class Shutdown(BaseException):
    """Raised in the main thread by SIGTERM/SIGINT while a job runs (not an Exception, so
    the pipeline's error handling lets it through after committing queued chunks)."""


class Heartbeat(threading.Thread):
    """Renews a running job's lease every lease/3 seconds and records its progress."""

    def __init__(self, queue: JobQueue, job_id: int, owner: str, lease_seconds: float):
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.queue, self.job_id, self.owner, self.lease = queue, job_id, owner, lease_seconds
        self.store_path: str | None = None
        self.lost = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.lease / 3):
            try:
                ok = self.queue.heartbeat(self.job_id, self.owner, self.lease, self.progress())
            except sqlite3.Error as err:  # a busy or briefly unreadable queue: try next beat
                log.warning("could not renew the lease of job %d: %s", self.job_id, err)
                continue
            if not ok and not self.lost:
                self.lost = True
                log.warning("job %d: the lease was lost (another worker may hold the job now)",
                            self.job_id)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)

    def progress(self) -> tuple[int, int] | None:
        """(committed chunks, chunks) of the store being written, if it can be read."""
        if self.store_path is None:
            return None
        from featstore.store import backend_for, location, open_store

        final = location.as_path(self.store_path)
        working = backend_for(final).working_path(final)  # where it is written until complete
        target = working if working.exists() else final
        if not target.exists():
            return None
        try:
            with open_store(target, allow_incomplete=True) as fs:
                return len(fs.committed_chunks()), fs.n_chunks
        except Exception:  # being created or renamed right now: report it next time
            return None


class Worker:
    """Claims and runs jobs on one device until stopped."""

    def __init__(self, queue: JobQueue, root: str, device: str, name: str, lease_seconds: float,
                 keep_backbones: int = 3, poll: float = POLL_SECONDS):
        from featstore.utils.devices import resolve_device

        self.queue, self.root, self.name = queue, root, name
        self.device = resolve_device(device)
        self.lease, self.keep, self.poll = lease_seconds, max(1, keep_backbones), poll
        self.loaded: OrderedDict[str, Any] = OrderedDict()  # backbone group -> Backbone
        self.stopping = False
        self.in_job = False
        self.phase = "starting the job"

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True
        if self.in_job:
            raise Shutdown(signal.Signals(signum).name)

    def run(self) -> int:
        parent = os.getppid()
        log.info("worker %s (pid %d) on %s, queue %s", self.name, os.getpid(), self.device,
                 self.queue.path)
        while not self.stopping:
            if os.getppid() != parent:
                log.warning("the service (pid %d) is gone; worker %s stops", parent, self.name)
                break
            try:
                job = self.queue.claim(self.name, os.getpid(), str(self.device), self.lease,
                                       prefer=list(reversed(self.loaded)))
            except sqlite3.Error as err:
                log.warning("could not read the queue: %s; retrying", err)
                job = None
            if job is None:
                time.sleep(self.poll)
                continue
            self.run_job(job)
        log.info("worker %s stopped", self.name)
        return 0

    def run_job(self, job: dict[str, Any]) -> None:
        """One attempt at one job: its result, a retry, or a failure go to the queue."""
        job_id, owner = job["id"], job["lease_owner"]
        handler = logging.FileHandler(self.queue.log_path(job_id), encoding="utf-8")
        formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S+00:00")
        formatter.converter = time.gmtime  # UTC, like the server's lines in the same log
        handler.setFormatter(formatter)
        handler.addFilter(public_record)
        package = logging.getLogger("featstore")
        package.addHandler(handler)
        beat = Heartbeat(self.queue, job_id, owner, self.lease)
        beat.start()
        try:
            self.in_job = True
            result = self._extract(job, beat)
            self.in_job = False
            if self.queue.finish(job_id, owner, result.as_dict()):
                log.info("job %d done", job_id)
            else:
                log.warning("job %d: finished, but this worker's lease had expired and the "
                            "job was given to another worker; the feature set is in the root "
                            "either way", job_id)
        except Shutdown as stop:
            self.in_job = False
            log.info("job %d: worker %s stopped by %s; committed chunks are kept", job_id,
                     self.name, stop)
            self.queue.release(job_id, owner, f"worker {self.name} stopped ({stop}) before the "
                               "job finished: queued again, the next attempt resumes")
        except Exception as err:  # any error of one job: record it, keep serving
            self.in_job = False
            public = public_error(err, self.phase)
            # The operator's log: everything. The job's log and error (clients): no data.
            log.error("job %d failed on attempt %d of %d:\n%s", job_id, job["attempts"],
                      job["max_attempts"], traceback.format_exc().rstrip(),
                      extra={"private": True})
            self.queue.append_log(job_id, f"job {job_id} failed on attempt {job['attempts']} of "
                                  f"{job['max_attempts']}:\n{public_traceback(err, public)}")
            state = self.queue.fail(job_id, owner, public, retry_delay=RETRY_DELAY,
                                    permanent=isinstance(err, PERMANENT))
            log.info("job %d: %s", job_id, {"queued": "queued again for another attempt",
                                            "failed": "failed (no attempts left, or an error "
                                                      "of its options or data that a retry "
                                                      "would meet again)"}.get(
                                                state or "", "no longer ours"))
        finally:
            self.in_job = False
            beat.stop()
            package.removeHandler(handler)
            handler.close()

    def _extract(self, job: dict[str, Any], beat: Heartbeat) -> Any:
        from featstore.data import load_dataset
        from featstore.extract.config import ExtractConfig
        from featstore.extract.pipeline import extract_one

        self.phase = "checking the job's options"
        cfg = ExtractConfig.from_dict({**job["options"], "root": self.root,
                                       "device": str(self.device), "progress": False,
                                       "lease_seconds": self.lease})
        log.info("attempt %d of %d on worker %s (pid %d, device %s): %s on %s (split %s)",
                 job["attempts"], job["max_attempts"], self.name, os.getpid(), self.device,
                 job["backbone"], job["dataset"], job["split"])
        self.phase = f"loading the backbone {job['backbone']}" + (
            f" with the weights {cfg.weights}" if cfg.weights else "")
        backbone = self._backbone(cfg, job["backbone_group"])
        self.phase = f"reading the data set {job['dataset']} (split {job['split']})"
        samples = load_dataset(cfg.datasets[0], cfg.splits[0], limit=cfg.limit, seed=cfg.seed,
                               **cfg.dataset_options)
        log.info("data set %s (split %s): %d samples", samples.name, samples.split, len(samples))
        key, path = self._expected_store(backbone, samples, cfg)
        if key:
            self._started(job, key, path, beat)
            log.info("feature set %s at %s", key, path)
        self.phase = f"extracting features of the data set {job['dataset']}"
        result = extract_one(backbone, samples, cfg, self.device)
        for item in result.invalid:  # why a sample was unreadable may quote it: class only
            item["error"] = _class_only(item.get("error"))
        if result.cached:
            log.info("already complete in the root (cache hit): %s", result.path)
        elif result.resumed_chunks:
            log.info("resumed from %d committed chunks (left by an earlier attempt); computed "
                     "the other %d in %.1f s", result.resumed_chunks, result.computed_chunks,
                     result.seconds)
        else:
            log.info("computed %d chunks in %.1f s", result.computed_chunks, result.seconds)
        waited = getattr(result, "waited_seconds", 0) or 0
        if waited:
            log.info("waited %.1f s for another writer of this feature set", waited)
        if result.n_invalid:
            log.info("%d samples could not be read and are marked invalid", result.n_invalid)
        log.info("done: %s %s -> %s", result.key, "x".join(map(str, result.shape)), result.path)
        return result

    def _started(self, job: dict[str, Any], key: str, path: str | None, beat: Any) -> None:
        """The job's feature set is known: record it, and let the heartbeat report progress."""
        self.queue.started(job["id"], job["lease_owner"], key, path)
        beat.store_path = path

    def _backbone(self, cfg: Any, group: str) -> Any:
        """The job's backbone: the one this worker holds, else loaded (and kept)."""
        from featstore.backbones import create_backbone
        from featstore.extract.pipeline import backbone_options

        spec = cfg.backbones[0]
        if group in self.loaded:
            self.loaded.move_to_end(group)
            log.info("backbone %s already loaded on this worker", spec)
            return self.loaded[group]
        while len(self.loaded) >= self.keep:
            _, old = self.loaded.popitem(last=False)
            log.info("unloading backbone %s to make room", getattr(old, "id", "?"))
            del old
            gc.collect()
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()
        t0 = time.perf_counter()
        backbone = create_backbone(spec, **backbone_options(cfg))
        backbone.to(self.device)
        self.loaded[group] = backbone
        log.info("loaded backbone %s in %.1f s", spec, time.perf_counter() - t0)
        return backbone

    def _expected_store(self, backbone: Any, samples: Any, cfg: Any
                        ) -> tuple[str | None, str | None]:
        """The key and path the extraction will write, for progress (None if unknown)."""
        from featstore.utils import keys
        from featstore.extract.pipeline import key_inputs
        from featstore.store import Root

        try:
            fingerprint = samples.fingerprint()
            samples.fingerprint = lambda: fingerprint  # extract_one asks again: read data once
            key = keys.content_key(key_inputs(backbone, samples, cfg))
        except Exception:
            log.debug("cannot tell the key in advance", exc_info=True)
            return None, None
        return key, str(Root(self.root).path_for(key, cfg.format))


def _permanent_errors() -> tuple[type[BaseException], ...]:
    from featstore import errors as e

    return (e.ConfigError, e.DataError, e.UnknownBackboneError, e.UnknownDatasetError,
            e.MissingAssetError, e.MissingDependencyError, e.DimensionMismatchError)


#: Errors a retry would meet again (the job's options or data): no more attempts.
PERMANENT = _permanent_errors()


def public_error(err: BaseException, phase: str) -> str:
    """What a client may read of ``err``: its class, what the worker was doing (with the
    paths the job names) and a generic description, never ``str(err)``, which may quote
    the data."""
    what = next((text for cls, text in DESCRIPTIONS if isinstance(err, cls)),
                "an unexpected error")
    return (f"{type(err).__name__} while {phase}: {what}. The details stay in the service's "
            "worker log, as they may quote the data; its operator can read them there, or "
            "run `featstore extract` with the same options where the files can be read.")


def public_traceback(err: BaseException, public: str) -> str:
    """The traceback's frames (code, never data) ending in the public message."""
    frames = "".join(traceback.format_list(traceback.extract_tb(err.__traceback__)))
    return f"Traceback (most recent call last):\n{frames}{public}"


def public_record(record: logging.LogRecord) -> bool:
    """Whether a log record may go to a job's log, which clients read."""
    if getattr(record, "private", False) or record.exc_info:
        return False
    return record.name.startswith(PUBLIC_LOGGERS)


def _class_only(error: Any) -> str:
    """``'OSError: cannot identify ...'`` -> ``'OSError'`` (the loader's format)."""
    name = str(error or "").partition(":")[0].strip()
    return name if name.isidentifier() else "unreadable"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m featstore.workflows.service.worker",
                                     description="A worker of `featstore serve` (started by it).")
    parser.add_argument("--queue", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default=None)
    parser.add_argument("--lease-seconds", type=float, default=30.0)
    parser.add_argument("--keep-backbones", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS)
    args = parser.parse_args(argv)
    name = args.name or f"{args.device}-{os.getpid()}"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    logging.getLogger("featstore").setLevel(logging.INFO)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    worker = Worker(JobQueue(args.queue), args.root, args.device, name, args.lease_seconds,
                    args.keep_backbones, args.poll)
    signal.signal(signal.SIGTERM, worker.on_signal)
    signal.signal(signal.SIGINT, worker.on_signal)
    try:
        return worker.run()
    except FeatstoreError as err:
        log.error("%s", err)
        return 1


if __name__ == "__main__":
    sys.exit(main())
