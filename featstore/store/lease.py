"""Leases: one writer per feature set, across processes, machines and object stores.

Two teammates (or two service workers) asking for the same key at the same time must
not both compute it. The writer holds a lease in the root,
``ROOT/.leases/<key>/<generation>.json``, that expires unless renewed:

* **acquire** creates the next generation file *exclusively* (``link`` on a local or
  shared file system, a conditional PUT with ``If-None-Match: *`` on S3), so of two
  writers racing for the same generation exactly one wins;
* the holder **renews** its own file (a heartbeat thread, every third of the lease);
* a lease whose holder stopped renewing (killed, machine gone) **expires** and the
  next writer takes it over by creating the next generation; the old holder, if it
  wakes up, finds at its next renewal that its file is no longer the newest or no
  longer its own (the token differs) and stops writing (:class:`LeaseLostError`); it
  also stops by itself once its last successful renewal is a lease period old;
* at the end the holder removes the lease folder.

Writers hold a lease only through :func:`hold_lease`, a context manager that waits for
a live holder (saying who it is), renews the lease from a heartbeat thread for as long
as the block runs and releases it however the block ends, so that no writer can write
under a lease that nothing renews.

Only the highest generation counts, so no file is ever overwritten by anyone but
its owner and no compare-and-swap is needed beyond "create if absent".

Expiry is judged by the *waiter's own* monotonic clock, never by comparing clocks of
two machines: a lease counts as expired once the waiter has seen its file unchanged
(no renewal) for the holder's lease duration. Clock skew between machines therefore
cannot make a live lease look expired. A holder on the same machine (same boot, same
PID namespace) whose process is gone is taken over at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from featstore.errors import FeatstoreError
from featstore.utils.keys import created_by
from featstore.store import location

log = logging.getLogger(__name__)

LEASE_DIR = ".leases"


class LeaseLostError(FeatstoreError, RuntimeError):
    """Another writer took over this writer's lease (it had expired)."""


class LeaseBusyError(FeatstoreError):
    """Another writer holds a live lease and the caller would not wait for it."""

    def __init__(self, message: str, holder: "LeaseInfo | None"):
        super().__init__(message)
        self.holder = holder


class FinishedMeanwhile(Exception):
    """Raised by :func:`hold_lease` when its ``on_wait`` found the work done by the
    writer it was waiting for: the block does not run; ``result`` is what it found."""

    def __init__(self, result: Any):
        super().__init__("finished by another writer")
        self.result = result


@dataclass
class LeaseInfo:
    """What a lease file says: who holds it, how long it lasts, its latest renewal."""

    generation: int
    owner: str
    host: str
    pid: int
    seconds: float
    beat: int
    token: str = ""
    machine: str = ""
    released: bool = False

    def dead_here(self) -> bool:
        """The holder ran on this machine (same boot and PID namespace) and its process
        is gone (kill -9): its lease need not be waited out."""
        if not self.machine or self.machine != _machine() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, but not ours to signal
            return False
        return False

    def describe(self) -> str:
        return f"{self.owner} (pid {self.pid} on {self.host})"


def _machine() -> str:
    """This boot of this machine and this PID namespace: where a pid means one process."""
    parts = [socket.gethostname()]
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            parts.append(f.read().strip())
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        return ""  # not Linux: never declare a holder dead by its pid
    return ":".join(parts)


class Lease:
    """A renewable, expiring claim on one key of a root: the primitive under
    :func:`hold_lease`, which writers use (reading who holds a key needs only
    :meth:`holder` and :meth:`expired`)."""

    def __init__(self, root: Any, key: str, *, seconds: float = 60.0):
        if seconds <= 0:
            raise ValueError(f"lease seconds must be > 0, got {seconds}")
        self.dir = location.join(root, LEASE_DIR, key)
        self.key = key
        self.seconds = float(seconds)
        self.token = uuid.uuid4().hex
        self.generation: int | None = None
        self._beats = 0
        self._valid_until = 0.0  # monotonic: this writer may write until then
        self._seen: tuple[int, int, str] | None = None  # (generation, beat, token) last seen
        self._seen_since = 0.0                            # monotonic time it was first seen
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading -----------------------------------------------------------------------
    def _generations(self) -> list[int]:
        fs, p = location.fs_and_path(self.dir)
        try:
            names = [n.rstrip("/").rsplit("/", 1)[-1] for n in fs.ls(p, detail=False)]
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def _file(self, generation: int) -> Any:
        return location.join(self.dir, f"{generation:08d}.json")

    def _read(self, generation: int) -> LeaseInfo | None:
        fs, p = location.fs_and_path(self._file(generation))
        try:
            # One GET (cat_file), not open-then-read: a file object pins the version it
            # first saw and fails if the holder renews the lease in between.
            data = json.loads(fs.cat_file(p))
        except FileNotFoundError:
            return None
        except ValueError:
            # Not written by featstore (its files appear whole, never half-written):
            # released, so that a stray file can never block a key forever.
            return LeaseInfo(generation, "unknown", "unknown", 0, 0.0, 0, released=True)
        return LeaseInfo(generation, str(data.get("owner", "?")), str(data.get("host", "?")),
                         int(data.get("pid", 0)), float(data.get("seconds", self.seconds)),
                         int(data.get("beat", 0)), str(data.get("token", "")),
                         str(data.get("machine", "")), bool(data.get("released", False)))

    def holder(self) -> LeaseInfo | None:
        """The current (highest-generation) lease, live or not; None if there is none."""
        gens = self._generations()
        return self._read(gens[-1]) if gens else None

    def expired(self, info: LeaseInfo) -> bool:
        """Whether ``info`` (the current lease) may be taken over, by this process's clock:
        released, its holder dead on this machine, or seen unrenewed for its duration."""
        if info.released or info.dead_here():
            return True
        now = time.monotonic()
        seen = (info.generation, info.beat, info.token)
        if seen != self._seen:
            self._seen, self._seen_since = seen, now
            return False
        return now - self._seen_since >= info.seconds

    def waited_out(self) -> float:
        """Seconds this process has seen the current lease unrenewed."""
        return time.monotonic() - self._seen_since if self._seen else 0.0

    # -- writing -----------------------------------------------------------------------
    def _payload(self, *, released: bool = False) -> bytes:
        return json.dumps({
            "key": self.key, "token": self.token, "owner": created_by(),
            "host": socket.gethostname(), "pid": os.getpid(), "machine": _machine(),
            "seconds": self.seconds, "beat": self._beats, "released": released,
            "renewed_at": time.time(),  # for people reading the file; never compared
        }).encode()

    def acquire(self) -> bool:
        """Take the lease if nobody holds a live one; True if this writer now holds it."""
        gens = self._generations()
        if gens:
            current = self._read(gens[-1])
            if current is not None and not self.expired(current):
                return False
            if current is not None and not current.released:
                log.warning("taking over the lease on %s from %s (%s)", self.key,
                            current.describe(), "its process is gone" if current.dead_here()
                            else f"not renewed for {self.waited_out():.0f} s")
        nxt = (gens[-1] + 1) if gens else 1
        t0 = time.monotonic()
        self._beats = 0
        if not location.create_exclusive(self._file(nxt), self._payload()):
            return False  # another writer won this generation
        self.generation = nxt
        self._valid_until = t0 + self.seconds
        self._lost.clear()
        return True

    def renew(self) -> None:
        """Extend the lease; raise LeaseLostError if another writer has taken it over."""
        if self.generation is None:
            raise LeaseLostError(f"The lease on {self.key} is not held.")
        t0 = time.monotonic()
        gens = self._generations()
        mine = self._read(self.generation) if self.generation in gens else None
        if mine is None or mine.token != self.token or gens[-1] > self.generation:
            # Taken over — or taken over, finished and cleaned up (and maybe taken
            # again at the same generation number: hence the token).
            self._lost.set()
            newer = self._read(gens[-1]) if gens else None
            who = newer.describe() if newer is not None and newer.token != self.token \
                else "another writer"
            raise LeaseLostError(
                f"The lease on {self.key} was taken over by {who} after this writer "
                f"stopped renewing it for {self.seconds:.0f} s (a stall, or slow storage: "
                "raise --lease-seconds).")
        self._beats += 1
        location.put_atomic(self._file(self.generation), self._payload())
        self._valid_until = t0 + self.seconds

    def check(self) -> None:
        """Raise LeaseLostError unless this writer still holds the lease: taken over, or
        not renewed successfully for a lease period (another writer may take it now)."""
        if self._lost.is_set():
            raise LeaseLostError(
                f"The lease on {self.key} was taken over by another writer; stopping.")
        if time.monotonic() > self._valid_until:
            raise LeaseLostError(
                f"The lease on {self.key} was not renewed for {self.seconds:.0f} s (storage "
                "errors or a stall), so another writer may hold it now; stopping.")

    def release(self, *, remove: bool = False) -> None:
        """Give the lease up; ``remove`` deletes the lease folder (the set is complete)."""
        self.stop_heartbeat()
        if self.generation is None:
            return
        try:
            gens = self._generations()
            mine = self._read(self.generation) if self.generation in gens else None
            if gens and gens[-1] == self.generation and mine is not None \
                    and mine.token == self.token:
                if remove:
                    location.remove(self.dir)
                    parent = location.as_path(self.dir).parent
                    if not location.is_remote(parent):
                        try:
                            parent.rmdir()  # the root's .leases folder, once empty
                        except OSError:
                            pass
                else:
                    location.put_atomic(self._file(self.generation), self._payload(released=True))
        except OSError as err:  # the lease expires by itself
            log.warning("could not release the lease on %s: %s", self.key, err)
        self.generation = None

    # -- heartbeat ---------------------------------------------------------------------
    def _beat(self) -> None:
        interval = self.seconds / 3
        while not self._stop.wait(interval):
            try:
                self.renew()
            except LeaseLostError as err:
                log.error("%s", err)
                return
            except OSError as err:  # storage hiccup: try again at the next beat
                log.warning("lease renewal of %s failed: %s", self.key, err)

    def start_heartbeat(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.key[:8]}",
                                        daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


@contextlib.contextmanager
def hold_lease(root: Any, key: str, *, seconds: float = 60.0, wait: bool = True,
               on_wait: Callable[[LeaseInfo | None], Any] | None = None,
               what: str = "", doing: str = "written") -> Iterator[Lease]:
    """Hold the lease on ``key`` of ``root`` for the ``with`` block.

    >>> with hold_lease("features", key, seconds=60) as lease:   # doctest: +SKIP
    ...     ...  # write; call lease.check() before each commit

    While another writer holds a live lease, wait (``wait=False``: raise
    :class:`LeaseBusyError` instead), logging who holds it once per holder; a dead
    holder's lease is taken over once it has gone unrenewed for its duration. After
    each failed attempt ``on_wait(holder)`` runs: a result other than None means the
    awaited writer did the work, and :class:`FinishedMeanwhile` carrying it is raised
    instead of running the block. The lease is renewed from a heartbeat thread while
    the block runs (``lease.check()`` raises :class:`LeaseLostError` once another
    writer may hold it) and given up when the block ends, its folder removed: a
    finished writer leaves nothing, and a failed one nothing that delays the next.

    ``what`` names the thing written in the log (default: the key), ``doing`` says
    what is done to it ("written", "extracted").
    """
    lease = Lease(root, key, seconds=seconds)
    told = None
    while not lease.acquire():
        holder = lease.holder()
        if not wait:
            raise LeaseBusyError(
                f"{what or key} is being {doing} by "
                f"{holder.describe() if holder else 'another process'}.", holder)
        if holder is not None and holder.generation != told:
            log.warning("%s is being %s by %s; waiting for it (if it has died, its lease is "
                        "taken over after %.0f s without renewal).", what or key, doing,
                        holder.describe(), holder.seconds)
            told = holder.generation
        time.sleep(min(1.0, (holder.seconds if holder else seconds) / 6))
        if on_wait is not None:
            result = on_wait(holder)
            if result is not None:
                raise FinishedMeanwhile(result)
    try:
        lease.start_heartbeat()
        yield lease
    finally:
        lease.release(remove=True)
