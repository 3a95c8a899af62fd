"""`featstore serve`: the HTTP JSON API in front of the job queue, and the worker processes.

Endpoints (all JSON; every one but ``/health`` needs ``Authorization: Bearer TOKEN``):

==========================  =================================================================
``GET  /health``            liveness: workers alive, job counts (no token needed)
``POST /jobs``              submit extract options; one job per (backbone, data set, split)
``GET  /jobs[?state=S]``    list jobs (newest 500 by default; ``limit=N``)
``GET  /jobs/<id>``         one job: state, progress, attempts, worker, key and path, error
``GET  /jobs/<id>/log``     the job's log: what each attempt did, tracebacks
==========================  =================================================================

The main thread supervises the workers (one process per device): a worker that dies
has its job put back in the queue at once and is restarted after a back-off.

The HTTP side (parsing, limits, answers) is :mod:`.http_api`.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from featstore.errors import ConfigError
from featstore.workflows.service.http_api import Handler, HTTPServer
from featstore.workflows.service.queue import JobQueue, default_queue_path
from featstore.workflows.service.requests import DEFAULT_LIMITS, DataDirs, expand, parse_body
from featstore.workflows.service.tokens import ENV_TOKENS, TokenSet


#: Seconds a worker gets to stop (and commit its queued chunks) before it is killed.
STOP_GRACE = 30.0
TICK = 0.5


@dataclass
class ServiceConfig:
    """Everything `featstore serve` is given."""

    root: str
    tokens: TokenSet
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    host: str = "127.0.0.1"
    port: int = 8765
    queue: str | None = None
    lease_seconds: float = 30.0
    max_attempts: int = 3
    max_queue: int = 1000
    max_per_token: int = 50
    max_request_bytes: int = 65536
    max_jobs_per_request: int = 100
    keep_backbones: int = 3
    allow_plugins: tuple[str, ...] = ()   # modules whose module:function backbones may run
    data_dirs: tuple[str, ...] = ()       # folders jobs may read files from (none: built-ins)
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    read_timeout: float = 5.0             # seconds a request's next bytes may take

    def validate(self) -> None:
        def bad(name: str, expected: str, got: Any) -> ConfigError:
            return ConfigError(f"The '--{name}' option of serve must be {expected}. "
                               f"Got {got!r} instead.")

        if not (0 <= self.port <= 65535):
            raise bad("port", "in [0, 65535]", self.port)
        if self.lease_seconds < 1:
            raise bad("lease-seconds", "at least 1", self.lease_seconds)
        for name in ("max_attempts", "max_queue", "max_per_token", "keep_backbones",
                     "max_jobs_per_request"):
            if getattr(self, name) < 1:
                raise bad(name.replace("_", "-"), "at least 1", getattr(self, name))
        if self.max_request_bytes < 1024:
            raise bad("max-request-bytes", "at least 1024", self.max_request_bytes)
        if not 0.1 <= self.read_timeout <= 300:
            raise bad("read-timeout", "a number of seconds in [0.1, 300]", self.read_timeout)


def parse_devices(spec: str) -> list[str]:
    """``auto`` (every CUDA device, else one CPU worker) or a list like ``cpu,cpu`` or
    ``cuda:0,cuda:1``: one worker per entry."""
    import torch

    from featstore.utils.devices import resolve_device

    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return [f"cuda:{i}" for i in range(n)] or ["cpu"]
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        device = resolve_device(item)
        if device.type == "cuda" and device.index is not None \
                and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--devices names {item}, but torch sees "
                              f"{torch.cuda.device_count()} CUDA device(s).")
        out.append(str(device))
    if not out:
        raise ConfigError("--devices must name at least one device: auto, cpu,cpu or "
                          f"cuda:0,cuda:1. Got {spec!r} instead.")
    return out


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def store_complete(path: str) -> bool:
    """True if a complete feature set is at ``path`` (any error: not usable, so False)."""
    from featstore.store import open_store

    try:
        with open_store(path):
            return True
    except Exception:
        return False


@dataclass
class WorkerProcess:
    name: str
    device: str
    threads: int | None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    failures: int = 0


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
        cpu_workers = sum(d == "cpu" for d in cfg.devices)
        threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        self.workers = [WorkerProcess(f"w{i}-{d.replace(':', '')}", d,
                                      threads if d == "cpu" else None)
                        for i, d in enumerate(cfg.devices)]
        self.stopping = False
        self._serving = False
        try:
            self.httpd = HTTPServer((cfg.host, cfg.port), Handler)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise ConfigError(f"Port {cfg.port} on {cfg.host} is in use (another service?). "
                                  "Choose another with --port.") from err
            raise ConfigError(f"Cannot listen on {cfg.host}:{cfg.port}: {err}.") from err
        self.httpd.daemon_threads = True
        self.httpd.service = self  # type: ignore[attr-defined]

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}"

    # -- running -----------------------------------------------------------------------
    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM, then stop the workers cleanly."""
        previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            for w in self.workers:
                self._spawn(w)
            thread = threading.Thread(target=self.httpd.serve_forever, name="http",
                                      kwargs={"poll_interval": TICK}, daemon=True)
            thread.start()
            self._serving = True
            self._announce()
            last_sweep = 0.0
            while True:
                time.sleep(TICK)
                try:
                    self._supervise()
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
        workers = ", ".join(f"{w.name} ({w.device}, pid {w.proc.pid if w.proc else '-'})"
                            for w in self.workers)
        self.say(f"featstore service listening on {self.url}")
        self.say(f"  root:    {self.root}")
        self.say(f"  queue:   {self.queue.path}")
        self.say(f"  logs:    {self.queue.logs_dir}")
        self.say(f"  workers: {workers}")
        self.say(f"  tokens:  {', '.join(self.cfg.tokens.names)}")
        self.say(f"  data:    {', '.join(self.data_dirs.names) or 'built-in data sets only'}")
        self.say(f"  limits:  {', '.join(f'{k}<={v}' for k, v in self.cfg.limits.items())}")
        self.say(f"Submit with: FEATSTORE_TOKEN=... featstore submit --server {self.url} "
                 "-b BACKBONE -d DATASET --wait")
        self.say("Stop with Ctrl-C.")
        if not is_loopback(self.cfg.host):
            self.warn(f"Warning: listening on {self.cfg.host}, reachable from other machines, "
                      "over plain HTTP: tokens travel in clear text. Put the service behind a "
                      "TLS proxy (docs/service.md, 'Security').")

    def _spawn(self, w: WorkerProcess) -> None:
        cmd = [sys.executable, "-m", "featstore.workflows.service.worker", "--queue", str(self.queue.path),
               "--root", self.root, "--device", w.device, "--name", w.name,
               "--lease-seconds", str(self.cfg.lease_seconds),
               "--keep-backbones", str(self.cfg.keep_backbones)]
        if w.threads:
            cmd += ["--threads", str(w.threads)]
        env = {k: v for k, v in os.environ.items() if k != ENV_TOKENS}  # workers need no tokens
        with open(self.queue.logs_dir / f"worker-{w.name}.log", "ab") as out:
            w.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                      start_new_session=True)  # Ctrl-C reaches only the server
        w.started_at = time.time()

    def _supervise(self) -> None:
        """Notice dead workers: requeue their jobs now, restart them after a back-off."""
        now = time.time()
        for w in self.workers:
            if w.proc is None:
                if now >= w.restart_at and not self.stopping:
                    self._spawn(w)
                    self.say(f"worker {w.name} restarted (pid {w.proc.pid})")  # type: ignore
                continue
            code = w.proc.poll()
            if code is None:
                continue
            pid = w.proc.pid
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            ids = self.queue.abandon(pid, f"died ({how})")
            w.failures = 1 if now - w.started_at > 60 else w.failures + 1
            delay = min(60.0, 2.0 ** (w.failures - 1))
            w.proc, w.restart_at = None, now + delay
            again = (f"; its job {', '.join(map(str, ids))} was queued again (or failed if it "
                     "had no attempts left)") if ids else ""
            self.warn(f"worker {w.name} (pid {pid}) {how}{again}; restarting it in {delay:.0f} s "
                      f"(its log: {self.queue.logs_dir / f'worker-{w.name}.log'})")

    def stop(self) -> None:
        """Stop serving, ask every worker to stop (SIGTERM), kill those that do not."""
        self.stopping = True
        if self._serving:  # shutdown() waits for serve_forever, so only once it runs
            self.httpd.shutdown()
            self._serving = False
        self.httpd.server_close()
        alive = [w for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for w in alive:
            w.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.time() + STOP_GRACE
        try:
            for w in alive:
                try:
                    w.proc.wait(timeout=max(0.1, deadline - time.time()))  # type: ignore
                except subprocess.TimeoutExpired:
                    self.warn(f"worker {w.name} did not stop in {STOP_GRACE:.0f} s; killing it")
        except KeyboardInterrupt:
            self.warn("Interrupted again: killing the workers.")
        for w in alive:
            if w.proc.poll() is None:  # type: ignore[union-attr]
                w.proc.kill()  # type: ignore[union-attr]
                w.proc.wait()  # type: ignore[union-attr]
                self.queue.abandon(w.proc.pid, "was killed when the service stopped")  # type: ignore
        self.say("Service stopped.")

    # -- answers -----------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        alive = sum(1 for w in self.workers if w.proc is not None and w.proc.poll() is None)
        return {"status": "ok", "workers": {"alive": alive, "configured": len(self.workers)},
                "jobs": self.queue.counts()}

    def submit(self, body: bytes, token_name: str) -> tuple[int, dict[str, Any]]:
        requests = expand(parse_body(body), self.root, cwd=self.cwd,
                          allow_plugins=self.cfg.allow_plugins,
                          max_jobs=self.cfg.max_jobs_per_request, data_dirs=self.data_dirs,
                          limits=self.cfg.limits)
        answers = self.queue.submit(requests, submitted_by=token_name,
                                    max_attempts=self.cfg.max_attempts,
                                    max_queue=self.cfg.max_queue,
                                    max_per_token=self.cfg.max_per_token,
                                    is_complete=store_complete)
        return (202 if any(a["status"] == "queued" for a in answers) else 200), {"jobs": answers}


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
