"""The worker processes of `featstore serve`: start, watch, restart, stop.

One process per device (:mod:`.worker`), each in its own session so that Ctrl-C reaches
only the server, which then stops them cleanly. A worker that dies has its job put back
in the queue at once (its committed chunks are kept, so the next attempt resumes) and
is restarted after a back-off that grows while it keeps dying.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from featstore.workflows.service.config import STOP_GRACE
from featstore.workflows.service.queue import JobQueue
from featstore.workflows.service.tokens import ENV_TOKENS


@dataclass
class WorkerProcess:
    name: str
    device: str
    threads: int | None
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    failures: int = 0


class Supervisor:
    """The workers of one service: one per entry of ``devices``."""

    def __init__(self, queue: JobQueue, root: str, devices: list[str], *, cwd: Path,
                 lease_seconds: float, keep_backbones: int,
                 say: Callable[[str], None], warn: Callable[[str], None]):
        self.queue, self.root, self.cwd = queue, root, cwd
        self.lease_seconds, self.keep_backbones = lease_seconds, keep_backbones
        self.say, self.warn = say, warn
        cpu_workers = sum(d == "cpu" for d in devices)
        threads = max(1, (os.cpu_count() or 1) // max(1, cpu_workers))
        self.workers = [WorkerProcess(f"w{i}-{d.replace(':', '')}", d,
                                      threads if d == "cpu" else None)
                        for i, d in enumerate(devices)]
        self.stopping = False

    def alive(self) -> int:
        return sum(1 for w in self.workers if w.proc is not None and w.proc.poll() is None)

    def describe(self) -> str:
        return ", ".join(f"{w.name} ({w.device}, pid {w.proc.pid if w.proc else '-'})"
                         for w in self.workers)

    def start(self) -> None:
        for w in self.workers:
            self._spawn(w)

    def _spawn(self, w: WorkerProcess) -> None:
        cmd = [sys.executable, "-m", "featstore.workflows.service.worker",
               "--queue", str(self.queue.path), "--root", self.root, "--device", w.device,
               "--name", w.name, "--lease-seconds", str(self.lease_seconds),
               "--keep-backbones", str(self.keep_backbones)]
        if w.threads:
            cmd += ["--threads", str(w.threads)]
        env = {k: v for k, v in os.environ.items() if k != ENV_TOKENS}  # workers need no tokens
        with open(self.queue.logs_dir / f"worker-{w.name}.log", "ab") as out:
            w.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, env=env, cwd=self.cwd,
                                      start_new_session=True)  # Ctrl-C reaches only the server
        w.started_at = time.time()

    def supervise(self) -> None:
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
        """Ask every worker to stop (SIGTERM: it commits its queued chunks and gives its
        job back), kill those that do not within :data:`STOP_GRACE` seconds."""
        self.stopping = True
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
