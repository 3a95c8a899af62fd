"""A worker of `featstore serve --ray`: a Ray actor that runs one job at a time.

The actor runs wherever Ray places it, on any node of the cluster, and never touches
the queue, a SQLite file on the service's machine: the service (:mod:`.ray_workers`)
claims a job for it, renews the job's lease, and records what the actor returns (the
result or the public error, and the job's log lines). Everything else is the local
worker's own (:class:`.worker.Worker`): the backbones it keeps loaded, the extraction
with :func:`featstore.extract.pipeline.extract_one` into the shared root (resumed from
committed chunks, under the root's per-key lease), and what clients may read of an
error (:func:`.worker.public_error`).

Ray is imported only when the actor runs (through :mod:`featstore.utils.cluster`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from featstore.workflows.service.worker import (PERMANENT, Shutdown, Worker, public_error,
                                                public_record, public_traceback)

log = logging.getLogger("featstore.workflows.service.worker")

#: Characters of a Ray node id in a worker's name (``r0-cpu@3fa2c1d09b7e``).
NODE_CHARS = 12


class LogCapture(logging.Handler):
    """The featstore log records of one job: the public lines (the job's log, which
    clients read) and all lines with tracebacks (the worker's log, for the operator)."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        public = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S+00:00")
        private = logging.Formatter(f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s",
                                    "%Y-%m-%dT%H:%M:%S+00:00")
        public.converter = private.converter = time.gmtime  # UTC, like the service's lines
        self.formats = public, private
        self.public: list[str] = []
        self.private: list[str] = []
        self.taking = threading.Lock()  # records come from several threads

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.formats[1].format(record)
            shown = self.formats[0].format(record) if public_record(record) else None
        except Exception:  # a record that cannot be formatted must not fail the job
            self.handleError(record)
            return
        with self.taking:
            self.private.append(line)
            if shown is not None:
                self.public.append(shown)

    def take(self) -> dict[str, list[str]]:
        """The lines since the last call: ``log`` (public) and ``private``."""
        with self.taking:
            lines = {"log": self.public, "private": self.private}
            self.public, self.private = [], []
        return lines


class RayWorker(Worker):
    """One Ray actor of the service: ``slot`` names its place (``r0-cpu``); its name adds
    the node it runs on (``r0-cpu@3fa2c1d09b7e``), which the job records show."""

    def __init__(self, root: str, device: str, slot: str, lease_seconds: float,
                 keep_backbones: int, threads: int | None):
        import torch

        from featstore.utils.cluster import require_ray

        if threads:  # pinned: a chunk's bits depend on the thread count (docs/service.md)
            torch.set_num_threads(threads)
        context = require_ray().get_runtime_context()
        self.node = context.get_node_id()
        super().__init__(None, root, device, f"{slot}@{self.node[:NODE_CHARS]}",  # type: ignore
                         lease_seconds, keep_backbones)
        self.store: dict[str, Any] = {}  # key and path of the job in hand, once known
        self.capture: LogCapture | None = None  # the job in hand's log lines not yet taken
        logging.getLogger("featstore").setLevel(logging.INFO)

    def info(self, probe: tuple[str, str] | None = None) -> dict[str, Any]:
        """Where this actor runs, and whether it sees the root (``probe``: a file the
        service wrote into a local root, and its text)."""
        import torch

        sees_root = True
        if probe is not None:
            try:
                sees_root = Path(probe[0]).read_text(encoding="utf-8") == probe[1]
            except OSError:
                sees_root = False
        return {"name": self.name, "node": self.node, "host": socket.gethostname(),
                "pid": os.getpid(), "device": str(self.device),
                "threads": torch.get_num_threads(), "sees_root": sees_root}

    def status(self) -> dict[str, Any]:
        """The job in hand: the key and path of the feature set being written (once
        known) and its log lines since the last call, so that the job's log follows the
        work (and keeps what was done before a crash)."""
        capture = self.capture
        return {**self.store, **(capture.take() if capture is not None else {})}

    def stop(self) -> None:
        """Stop at the next forward pass: queued chunks are committed, the job given back."""
        self.stopping = True

    def run_job(self, job: dict[str, Any]) -> dict[str, Any]:
        """One attempt at ``job``: ``state`` done (with ``result``), failed (with the public
        ``error``, ``permanent`` and ``traceback``) or stopped; and the log lines."""
        capture = self.capture = LogCapture(self.name)
        package = logging.getLogger("featstore")
        package.addHandler(capture)
        self.store, self.phase = {}, "starting the job"
        out: dict[str, Any]
        try:
            self.in_job = True
            out = {"state": "done", "result": self._extract(job, None).as_dict()}
        except Shutdown as stop:
            log.info("job %d: worker %s stopped by %s; committed chunks are kept", job["id"],
                     self.name, stop)
            out = {"state": "stopped"}
        except Exception as err:  # any error of one job: report it, keep serving
            public = public_error(err, self.phase)
            log.error("job %d failed on attempt %d of %d:\n%s", job["id"], job["attempts"],
                      job["max_attempts"], traceback.format_exc().rstrip(),
                      extra={"private": True})
            out = {"state": "failed", "error": public, "permanent": isinstance(err, PERMANENT),
                   "traceback": public_traceback(err, public)}
        finally:
            self.in_job = False
            package.removeHandler(capture)
            self.capture = None
        return {**out, **capture.take(), "loaded": list(reversed(self.loaded))}

    def _started(self, job: dict[str, Any], key: str, path: str | None, beat: Any) -> None:
        self.store = {"key": key, "path": path}  # the service asks with status()

    def _backbone(self, cfg: Any, group: str) -> Any:
        backbone = super()._backbone(cfg, group)
        if not getattr(backbone, "_featstore_stoppable", False):
            try:  # a stop from the service is seen between forward passes
                backbone.encode = _stoppable(backbone.encode, lambda: self.stopping)
                backbone._featstore_stoppable = True
            except AttributeError:  # a backbone without instance attributes: killed on stop
                pass
        return backbone


def _stoppable(encode: Callable[..., Any], stopping: Callable[[], bool]) -> Callable[..., Any]:
    """``encode`` that raises :class:`Shutdown` once ``stopping()`` (the actor's ``stop``,
    called from another thread: Ray delivers no signal to an actor's thread)."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if stopping():
            raise Shutdown("the service is stopping")
        return encode(*args, **kwargs)

    return guarded
