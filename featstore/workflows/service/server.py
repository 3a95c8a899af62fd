"""`featstore serve`: the HTTP JSON API in front of the job queue, and the worker processes.

Endpoints (all JSON; every one but ``/health`` and ``/openapi.json`` needs
``Authorization: Bearer TOKEN``):

==========================  =================================================================
``GET  /health``            liveness: workers alive, job counts (no token needed)
``GET  /openapi.json``      the API's OpenAPI schema (no token needed)
``POST /jobs``              submit extract options; one job per (backbone, data set, split)
``GET  /jobs[?state=S]``    list jobs (newest 500 by default; ``limit=N``)
``GET  /jobs/<id>``         one job: state, progress, attempts, worker, key and path, error
``GET  /jobs/<id>/log``     the job's log: what each attempt did, tracebacks
==========================  =================================================================

This module puts the pieces together and runs them: the settings (:mod:`.config`), the
queue (:mod:`.queue`), the workers (:mod:`.supervisor`; with ``--ray``, Ray actors on a
cluster: :mod:`.ray_workers`), the answers (:mod:`.handlers`)
and their HTTP API (:mod:`.app`) on uvicorn (:mod:`.http_server`), in a thread, while
the main thread watches the workers and the leases.
"""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from featstore.workflows.service.addresses import is_loopback
from featstore.workflows.service.app import create_app
from featstore.workflows.service.config import TICK, ServiceConfig
from featstore.workflows.service.handlers import ServiceAPI
from featstore.workflows.service.http_server import HTTPServer
from featstore.workflows.service.queue import JobQueue, default_queue_path
from featstore.workflows.service.requests import DataDirs
from featstore.workflows.service.supervisor import Supervisor


class Service:
    """The HTTP server, the queue and the workers of one root."""

    def __init__(self, cfg: ServiceConfig, *, say: Callable[[str], None] = print,
                 warn: Callable[[str], None] = print):
        cfg.validate()
        self.cfg, self.say, self.warn = cfg, say, warn
        self.root = cfg.root if "://" in cfg.root else str(Path(cfg.root).expanduser().resolve())
        self.cwd = Path.cwd()
        self.data_dirs = DataDirs.resolve(cfg.data_dirs, self.cwd)
        self.queue = JobQueue(cfg.queue or default_queue_path(self.root), busy_timeout=10.0)
        self.queue.init(self.root)
        self.workers: Any
        if cfg.ray:  # the workers are Ray actors on a cluster (docs/service.md)
            from featstore.workflows.service.ray_workers import RaySupervisor

            self.workers = RaySupervisor(self.queue, self.root, cfg.devices, address=cfg.ray,
                                         lease_seconds=cfg.lease_seconds,
                                         keep_backbones=cfg.keep_backbones, say=say, warn=warn)
            cfg.devices = self.workers.devices  # "auto" resolved on the cluster
        else:
            self.workers = Supervisor(self.queue, self.root, cfg.devices, cwd=self.cwd,
                                      lease_seconds=cfg.lease_seconds,
                                      keep_backbones=cfg.keep_backbones, say=say, warn=warn)
        self.api = ServiceAPI(cfg, self.root, self.queue, self.data_dirs, self.cwd,
                              self.workers.alive)
        self.http = HTTPServer(create_app(self.api, cfg), cfg.host, cfg.port,
                               read_timeout=cfg.read_timeout)

    @property
    def url(self) -> str:
        host, port = self.http.address
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM, then stop the workers cleanly."""
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self.workers.start()
            self.http.start()
            self._announce()
            last_sweep = 0.0
            while True:
                time.sleep(TICK)
                try:
                    self.workers.supervise()
                    if time.time() - last_sweep > self.cfg.lease_seconds / 3:
                        for job_id in self.queue.expire_leases():
                            self.warn(f"job {job_id}: its worker stopped renewing its lease "
                                      "(hung?); the job was queued again, or failed if it had "
                                      "no attempts left")
                        last_sweep = time.time()
                except sqlite3.Error as err:  # the queue was busy too long: try next tick
                    self.warn(f"could not update the queue: {err}; retrying")
        except KeyboardInterrupt:
            self.say("Stopping: workers finish their current chunk and give their jobs back...")
        finally:
            self.stop()
            signal.signal(signal.SIGTERM, previous)

    def _announce(self) -> None:
        self.say(f"featstore service listening on {self.url}")
        self.say(f"  root:    {self.root}")
        self.say(f"  queue:   {self.queue.path}")
        self.say(f"  logs:    {self.queue.logs_dir}")
        self.say(f"  workers: {self.workers.describe()}")
        self.say(f"  tokens:  {', '.join(self.cfg.tokens.names)}")
        self.say(f"  data:    {', '.join(self.data_dirs.names) or 'built-in data sets only'}")
        self.say(f"  limits:  {', '.join(f'{k}<={v}' for k, v in self.cfg.limits.items())}")
        self.say(f"  API:     {self.url}/openapi.json")
        self.say(f"Submit with: FEATSTORE_TOKEN=... featstore submit --server {self.url} "
                 "-b BACKBONE -d DATASET --wait")
        self.say("Stop with Ctrl-C.")
        if not is_loopback(self.cfg.host):
            self.warn(f"Warning: listening on {self.cfg.host}, reachable from other machines, "
                      "over plain HTTP: tokens travel in clear text. Put the service behind a "
                      "TLS proxy (docs/service.md, 'Security').")

    def stop(self) -> None:
        """Stop serving, ask every worker to stop (SIGTERM), kill those that do not."""
        self.http.stop()
        self.workers.stop()
        self.say("Service stopped.")


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
