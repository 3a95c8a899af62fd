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
  wakes up, sees a newer generation at its next renewal and stops writing
  (:class:`LeaseLostError`);
* on success the holder removes the lease folder.

Only the highest generation counts, so no file is ever overwritten by anyone but
its owner and no compare-and-swap is needed beyond "create if absent". Expiry uses
the wall clocks of the machines involved: keep them in sync (NTP) to well under the
lease duration (60 s by default).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..errors import FeatstoreError
from . import location

log = logging.getLogger(__name__)

LEASE_DIR = ".leases"


class LeaseLostError(FeatstoreError, RuntimeError):
    """Another writer took over this writer's lease (it had expired)."""


@dataclass
class LeaseInfo:
    """What a lease file says: who holds it and until when."""

    generation: int
    owner: str
    host: str
    pid: int
    expires_at: float
    released: bool = False

    @property
    def live(self) -> bool:
        """Unexpired, unreleased, and not held by a process known to be dead."""
        if self.released or self.expires_at <= time.time():
            return False
        return not self._dead_here()

    def _dead_here(self) -> bool:
        """True if the holder ran on this machine and its process is gone (kill -9):
        its lease need not be waited out."""
        if self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, but not ours to signal
            return False
        return False

    def describe(self) -> str:
        left = self.expires_at - time.time()
        return (f"{self.owner} (pid {self.pid} on {self.host}), lease "
                + (f"expires in {left:.0f} s" if left > 0 else f"expired {-left:.0f} s ago"))


def _owner() -> str:
    try:
        import getpass

        user = getpass.getuser()
    except Exception:  # no user name (containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class Lease:
    """A renewable, expiring claim on one key of a root.

    >>> lease = Lease("features", "3fa2c1d09b7e4a55", seconds=60)   # doctest: +SKIP
    >>> if lease.acquire():
    ...     with lease.heartbeat():
    ...         ...  # write; call lease.check() before each commit
    ...     lease.release()
    """

    def __init__(self, root: Any, key: str, *, seconds: float = 60.0):
        if seconds <= 0:
            raise ValueError(f"lease seconds must be > 0, got {seconds}")
        self.dir = location.join(root, LEASE_DIR, key)
        self.key = key
        self.seconds = float(seconds)
        self.token = uuid.uuid4().hex
        self.generation: int | None = None
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
        try:
            data = json.loads(self._file(generation).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            # Not written by featstore (its files appear whole, never half-written):
            # an expired lease, so that a stray file can never block a key forever.
            return LeaseInfo(generation, "unknown", "unknown", 0, 0.0)
        return LeaseInfo(generation, data.get("owner", "?"), data.get("host", "?"),
                         int(data.get("pid", 0)), float(data.get("expires_at", 0)),
                         bool(data.get("released", False)))

    def holder(self) -> LeaseInfo | None:
        """The current (highest-generation) lease, live or not; None if there is none."""
        gens = self._generations()
        return self._read(gens[-1]) if gens else None

    # -- writing -----------------------------------------------------------------------
    def _payload(self, *, released: bool = False) -> bytes:
        return json.dumps({
            "key": self.key, "token": self.token, "owner": _owner(),
            "host": socket.gethostname(), "pid": os.getpid(),
            "expires_at": 0.0 if released else time.time() + self.seconds,
            "seconds": self.seconds, "released": released,
        }).encode()

    def acquire(self) -> bool:
        """Take the lease if nobody holds a live one; True if this writer now holds it."""
        gens = self._generations()
        if gens:
            current = self._read(gens[-1])
            if current is not None and current.live:
                return False
            if current is not None and not current.released:
                log.warning("taking over the lease on %s from %s", self.key, current.describe())
        nxt = (gens[-1] + 1) if gens else 1
        if not location.create_exclusive(self._file(nxt), self._payload()):
            return False  # another writer won this generation
        self.generation = nxt
        self._lost.clear()
        return True

    def renew(self) -> None:
        """Extend the lease; raise LeaseLostError if another writer has taken it over."""
        if self.generation is None:
            raise LeaseLostError(f"The lease on {self.key} is not held.")
        gens = self._generations()
        if self.generation not in gens or gens[-1] > self.generation:
            # Taken over — or taken over, finished and cleaned up by the successor.
            self._lost.set()
            newer = self._read(gens[-1]) if gens and gens[-1] > self.generation else None
            raise LeaseLostError(
                f"The lease on {self.key} was taken over by "
                f"{newer.describe() if newer else 'another writer'}: this writer was too slow "
                "to renew it (raise --lease-seconds for very slow storage).")
        location.put_atomic(self._file(self.generation), self._payload())

    def check(self) -> None:
        """Raise LeaseLostError if the heartbeat found the lease taken over."""
        if self._lost.is_set():
            raise LeaseLostError(
                f"The lease on {self.key} was taken over by another writer; stopping.")

    def release(self, *, remove: bool = False) -> None:
        """Give the lease up; ``remove`` deletes the lease folder (the set is complete)."""
        self.stop_heartbeat()
        if self.generation is None:
            return
        try:
            gens = self._generations()
            if gens and gens[-1] == self.generation:
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
