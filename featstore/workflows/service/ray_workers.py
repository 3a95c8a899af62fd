"""The workers of `featstore serve --ray ADDRESS`: Ray actors on a cluster, driven from here.

The service keeps its front door (HTTP API, tokens, limits, queue and dedupe) and its
SQLite queue on its own machine; only the work moves. Each worker is a Ray actor
(:class:`.ray_actor.RayWorker`, one per GPU with ``num_gpus=1``, or one per CPU slot
with one pinned torch thread), placed by Ray on any node (spread over them). This
process claims a job for an idle actor, sends it over, renews the job's lease and
reports its progress (read from the store being written in the shared root) while the
actor runs it, and records the outcome the actor returns, log lines included, as a local
worker would have. So :class:`RaySupervisor` answers what :class:`.supervisor.Supervisor`
answers (``start``, ``supervise``, ``alive``, ``describe``, ``stop``).

An actor that dies (its node removed, its process killed): the job's attempt counts,
the job is queued again at once and taken by another actor, which resumes from the
store's committed chunks once the dead writer's lease on the feature set runs out; a
new actor is started in the dead one's place (Ray places it when a node has room). A
store is published only once complete, so no half store is ever seen.

The root must be one store for every node: a folder that every node mounts at the same
path, or an ``s3://`` URL. For a local root each actor checks, when it starts, that it
sees a file this process wrote there; one that does not takes no jobs.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from featstore.errors import ConfigError
from featstore.utils.cluster import connect
from featstore.workflows.service.config import STOP_GRACE
from featstore.workflows.service.queue import JobQueue, iso
from featstore.workflows.service.ray_actor import RayWorker
from featstore.workflows.service.tokens import ENV_TOKENS
from featstore.workflows.service.worker import RETRY_DELAY, Heartbeat

#: Seconds an actor may wait for Ray to place it before the operator is told.
PLACE_WARNING = 60.0
#: Seconds to wait for an answer Ray says is ready.
GET_TIMEOUT = 30.0
#: Variables the actors get from this process's environment: featstore's own settings
#: (FEATSTORE_DATA_DIR, ...), never a token.
SECRET_VARIABLES = (ENV_TOKENS, "FEATSTORE_TOKEN")


def plan_workers(devices: list[str], resources: dict[str, float], address: str) -> list[str]:
    """The kinds of the actors to start: ``devices`` (``cpu``/``cuda`` entries), or for
    ``["auto"]`` one ``cuda`` per GPU of the cluster, else one ``cpu`` per CPU."""
    if devices != ["auto"]:
        return list(devices)
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus:
        return ["cuda"] * gpus
    if cpus:
        return ["cpu"] * cpus
    raise ConfigError(f"The Ray cluster at {address} has no CPU or GPU for workers "
                      f"(it offers {dict(resources)}). Add nodes, or name the workers with "
                      "--devices cpu,cpu.")


def forwarded_env() -> dict[str, str]:
    """What the actors get of this process's environment: the FEATSTORE_* settings,
    less the tokens."""
    return {k: v for k, v in os.environ.items()
            if k.startswith("FEATSTORE_") and k not in SECRET_VARIABLES}


@dataclass
class Slot:
    """One place for a worker: its actor (replaced when it dies) and its job in hand."""

    base: str                       # r0-cpu
    kind: str                       # cpu or cuda
    actor: Any = None
    ready: Any = None               # the ObjectRef of info() while the actor starts
    info: dict[str, Any] | None = None
    started_at: float = 0.0
    restart_at: float = 0.0
    failures: int = 0
    warned: bool = False
    refused: bool = False           # it cannot see the root: no jobs, no restart
    loaded: list[str] = field(default_factory=list)  # backbone groups it holds, newest first
    job: dict[str, Any] | None = None
    task: Any = None                # the ObjectRef of run_job()
    beat: Heartbeat | None = None
    asked: Any = None               # the ObjectRef of status() until the store is known

    @property
    def name(self) -> str:
        return self.info["name"] if self.info else self.base


class RaySupervisor:
    """The Ray actors of one service, one per entry of ``devices`` (or per device of the
    cluster for ``["auto"]``)."""

    def __init__(self, queue: JobQueue, root: str, devices: list[str], *, address: str,
                 lease_seconds: float, keep_backbones: int,
                 say: Callable[[str], None], warn: Callable[[str], None]):
        self.queue, self.root, self.address = queue, root, address
        self.lease_seconds, self.keep_backbones = lease_seconds, keep_backbones
        self.say, self.warn = say, warn
        self.ray = connect(address)
        self.devices = plan_workers(devices, self.ray.cluster_resources(), address)
        self.slots = [Slot(f"r{i}-{kind}", kind) for i, kind in enumerate(self.devices)]
        self.actor_class = self.ray.remote(RayWorker)
        self.probe = self._write_probe()
        self.stopping = False

    def _write_probe(self) -> tuple[str, str] | None:
        """A file in a local root that every actor must see (None for a URL root)."""
        if "://" in self.root:
            return None
        path = Path(self.root) / ".featstore" / "ray-root-check"
        path.parent.mkdir(parents=True, exist_ok=True)
        text = secrets.token_hex(16)
        path.write_text(text, encoding="utf-8")
        return str(path), text

    # -- what the service asks ---------------------------------------------------------
    def alive(self) -> int:
        return sum(1 for s in self.slots if s.info is not None)

    def describe(self) -> str:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in Counter(self.devices).items())
        return (f"{len(self.slots)} Ray actors ({kinds}) on the cluster at {self.address}; "
                "each says where it runs once placed")

    def start(self) -> None:
        for slot in self.slots:
            self._spawn(slot)

    def supervise(self) -> None:
        """One look at every actor: placed, finished, dead; idle ones get a job."""
        now = time.time()
        for slot in self.slots:
            try:
                self._look(slot, now)
            except self.ray.exceptions.RayError as err:  # Ray busy or reconnecting: next tick
                self.warn(f"worker {slot.name}: {_reason(err)}; trying again")

    def _look(self, slot: Slot, now: float) -> None:
        if slot.refused:
            return
        if slot.actor is None:
            if now >= slot.restart_at and not self.stopping:
                self._spawn(slot)
            return
        if slot.info is None:
            self._check_ready(slot, now)
        elif slot.task is not None:
            self._check_task(slot)
        if slot.actor is not None and slot.info is not None and slot.task is None \
                and not self.stopping:
            self._dispatch(slot)

    # -- actors --------------------------------------------------------------------------
    def _spawn(self, slot: Slot) -> None:
        env = forwarded_env()
        options: dict[str, Any] = {"num_cpus": 1, "max_concurrency": 2,  # status() while busy
                                   "scheduling_strategy": "SPREAD"}
        if slot.kind == "cuda":
            options["num_gpus"] = 1
        if env:
            options["runtime_env"] = {"env_vars": env}
        slot.actor = self.actor_class.options(**options).remote(
            self.root, slot.kind, slot.base, self.lease_seconds, self.keep_backbones,
            1 if slot.kind == "cpu" else None)
        slot.ready, slot.info, slot.warned = slot.actor.info.remote(self.probe), None, False
        slot.started_at, slot.loaded = time.time(), []

    def _check_ready(self, slot: Slot, now: float) -> None:
        done, _ = self.ray.wait([slot.ready], timeout=0)
        if not done:
            if now - slot.started_at > PLACE_WARNING and not slot.warned:
                slot.warned = True
                self.warn(f"worker {slot.base} is not placed yet: no node of the Ray cluster "
                          f"has a free {'GPU' if slot.kind == 'cuda' else 'CPU'} (`ray status` "
                          "shows what it has); jobs wait in the queue meanwhile")
            return
        try:
            info = self.ray.get(slot.ready, timeout=GET_TIMEOUT)
        except self.ray.exceptions.RayError as err:
            self._lost(slot, err, "could not start")
            return
        if not info["sees_root"]:
            slot.refused = True
            self.warn(f"worker {info['name']} on Ray node {info['node']} ({info['host']}) "
                      f"cannot see the root {self.root}: with --ray the root must be a folder "
                      "that every node mounts at the same path, or an s3:// URL "
                      "(docs/service.md, 'Workers on a Ray cluster'). It takes no jobs.")
            self._kill(slot)
            return
        slot.info = info
        line = (f"worker {info['name']} ready on Ray node {info['node']} ({info['host']}, "
                f"pid {info['pid']}, {info['device']}, torch threads: {info['threads']})")
        self.say(line)
        self._worker_log(slot, [f"{iso(time.time())} {line}"])

    def _kill(self, slot: Slot) -> None:
        try:
            self.ray.kill(slot.actor, no_restart=True)
        except Exception:  # already gone with its node
            pass
        slot.actor = slot.ready = slot.info = None

    def _lost(self, slot: Slot, err: BaseException, how: str = "died") -> None:
        """The actor is gone: its job goes back to the queue (the attempt counts), and a
        new actor takes its place after a back-off that grows while they keep dying."""
        reason = _reason(err)
        what = f"worker {slot.name}" + (f" on Ray node {slot.info['node']} (pid "
                                        f"{slot.info['pid']})" if slot.info else "")
        again = ""
        if slot.job is not None:
            job = self._release_task(slot)
            text = f"{what} {how} ({reason}) on attempt {job['attempts']} of {job['max_attempts']}"
            state = self.queue.fail(job["id"], job["lease_owner"], text, retry_delay=0)
            self.queue.append_log(job["id"], f"{text}: " + (
                "queued again; the next attempt resumes from committed chunks"
                if state == "queued" else "failed, no attempts left"))
            again = f"; its job {job['id']} was queued again (or failed if it had no attempts left)"
        now = time.time()
        slot.failures = 1 if now - slot.started_at > 60 else slot.failures + 1
        delay = min(60.0, 2.0 ** (slot.failures - 1))
        self._kill(slot)
        slot.restart_at = now + delay
        self.warn(f"{what} {how} ({reason}){again}; starting another in {delay:.0f} s")

    # -- jobs ----------------------------------------------------------------------------
    def _dispatch(self, slot: Slot) -> None:
        info = slot.info
        assert info is not None
        job = self.queue.claim(info["name"], info["pid"], info["device"], self.lease_seconds,
                               prefer=slot.loaded)
        if job is None:
            return
        slot.job, slot.asked = job, None
        slot.beat = Heartbeat(self.queue, job["id"], job["lease_owner"], self.lease_seconds)
        slot.beat.start()
        self.queue.append_log(job["id"], f"attempt {job['attempts']} of {job['max_attempts']} "
                              f"sent to worker {info['name']} on Ray node {info['node']} "
                              f"({info['host']}, pid {info['pid']}, {info['device']})")
        slot.task = slot.actor.run_job.remote(job)

    def _check_task(self, slot: Slot) -> None:
        done, _ = self.ray.wait([slot.task], timeout=0)
        if not done:
            self._poll(slot)
            return
        if slot.asked is not None:  # its lines come before the last ones
            self._take_status(slot)
        try:
            outcome = self.ray.get(slot.task, timeout=GET_TIMEOUT)
        except self.ray.exceptions.RayActorError as err:
            self._lost(slot, err)
            return
        except self.ray.exceptions.RayError as err:  # a bug outside the job's own errors
            outcome = {"state": "failed", "permanent": False, "log": [], "private": [],
                       "error": f"{type(err).__name__} in the Ray worker {slot.name}: an "
                                f"unexpected error; see the service's output",
                       "traceback": "", "loaded": slot.loaded}
            self.warn(f"worker {slot.name}: {err}")
        self._record(slot, outcome)

    def _poll(self, slot: Slot) -> None:
        """Ask the busy actor, once a tick, for its job's new log lines and feature set."""
        if slot.asked is None:
            slot.asked = slot.actor.status.remote()
            return
        done, _ = self.ray.wait([slot.asked], timeout=0)
        if done:
            self._take_status(slot)

    def _take_status(self, slot: Slot) -> None:
        """The answer to status(): log lines to the logs; the feature set being written
        to the job's record, and to its heartbeat, which reports the progress."""
        try:
            status = self.ray.get(slot.asked, timeout=GET_TIMEOUT)
        except self.ray.exceptions.RayError:  # the actor is dying: run_job will say so
            status = {}
        slot.asked = None
        job, beat = slot.job, slot.beat
        if job is None or beat is None:
            return
        self._job_log(job["id"], status.get("log") or [])
        self._worker_log(slot, status.get("private") or [])
        if status.get("key") and beat.store_path is None:
            self.queue.started(job["id"], job["lease_owner"], status["key"], status["path"])
            beat.store_path = status["path"]

    def _release_task(self, slot: Slot) -> dict[str, Any]:
        job = slot.job
        assert job is not None
        if slot.beat is not None:
            slot.beat.stop()
        slot.job = slot.task = slot.beat = slot.asked = None
        return job

    def _record(self, slot: Slot, outcome: dict[str, Any]) -> None:
        """What the actor did with its job, into the queue and the logs."""
        name = slot.name
        job = self._release_task(slot)
        job_id, owner = job["id"], job["lease_owner"]
        slot.loaded = list(outcome.get("loaded") or [])
        self._job_log(job_id, outcome.get("log") or [])
        self._worker_log(slot, outcome.get("private") or [])
        if outcome["state"] == "done":
            if self.queue.finish(job_id, owner, outcome["result"]):
                self.queue.append_log(job_id, f"job {job_id} done")
            else:
                self.queue.append_log(job_id, f"job {job_id}: finished, but the lease had "
                                      "expired and the job was given to another worker; the "
                                      "feature set is in the root either way")
        elif outcome["state"] == "stopped":
            self.queue.release(job_id, owner, f"worker {name} stopped (the service is "
                               "stopping) before the job finished: queued again, the next "
                               "attempt resumes")
        else:
            self.queue.append_log(job_id, f"job {job_id} failed on attempt {job['attempts']} "
                                  f"of {job['max_attempts']}:\n{outcome['traceback']}")
            state = self.queue.fail(job_id, owner, outcome["error"], retry_delay=RETRY_DELAY,
                                    permanent=outcome["permanent"])
            self.queue.append_log(job_id, f"job {job_id}: " + {
                "queued": "queued again for another attempt",
                "failed": "failed (no attempts left, or an error of its options or data "
                          "that a retry would meet again)"}.get(state or "", "no longer ours"))

    def _job_log(self, job_id: int, lines: list[str]) -> None:
        if lines:
            with open(self.queue.log_path(job_id), "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")

    def _worker_log(self, slot: Slot, lines: list[str]) -> None:
        if lines:
            with open(self.queue.logs_dir / f"worker-{slot.base}.log", "a",
                      encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")

    # -- stopping ------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask every busy actor to stop at its next forward pass (it commits its queued
        chunks and gives its job back), wait :data:`STOP_GRACE` seconds, then kill all."""
        self.stopping = True
        busy = [s for s in self.slots if s.task is not None]
        for slot in busy:
            slot.actor.stop.remote()
        deadline = time.time() + STOP_GRACE
        try:
            while busy and time.time() < deadline:
                self.ray.wait([s.task for s in busy], num_returns=1,
                              timeout=min(1.0, max(0.0, deadline - time.time())))
                for slot in list(busy):
                    self._check_task(slot)
                    if slot.task is None:
                        busy.remove(slot)
        except KeyboardInterrupt:
            self.warn("Interrupted again: killing the workers.")
        for slot in busy:
            if slot.task is not None:
                job = self._release_task(slot)
                text = (f"worker {slot.name} was killed when the service stopped, on attempt "
                        f"{job['attempts']} of {job['max_attempts']}")
                self.queue.fail(job["id"], job["lease_owner"], text, retry_delay=0)
                self.queue.append_log(job["id"], text)
        for slot in self.slots:
            if slot.actor is not None:
                self._kill(slot)
        self.ray.shutdown()


def _reason(err: BaseException) -> str:
    """Ray's error in one short line."""
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    first = first if len(first) <= 160 else first[:159] + "…"
    return f"{type(err).__name__}: {first}" if first else type(err).__name__
