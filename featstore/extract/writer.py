"""A writer thread: encodes and writes whole chunks while the backbone runs."""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import numpy as np

from featstore.store import FeatureStore


class ChunkWriter:
    """Write ``(index, features, valid)`` chunks to a store on a background thread.

    Compression and file writes release the GIL, so they overlap the next forward
    pass. The queue is short: if the disk falls behind, the producer waits rather than
    holding many chunks in memory. An error in the thread is raised by the next
    :meth:`put` or by :meth:`close`.

    ``check`` runs before every chunk is written and raises if this writer may no longer
    write: the ``check`` of the lease held on the set's key
    (:func:`featstore.store.lease.hold_lease`), so that a writer whose lease was taken
    over stops before it writes into another writer's set.
    """

    def __init__(self, store: FeatureStore, *, check: Callable[[], None], depth: int = 2):
        self.store = store
        self._check = check
        self.written = 0
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="featstore-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue  # drain after a failure
            try:
                self._check()
                self.store.write_chunk(*item)
                self.written += 1
            except BaseException as err:
                self._error = err

    def put(self, index: int, features: np.ndarray, valid: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((index, features, valid))

    def close(self) -> None:
        """Wait for every queued chunk to be written; re-raise a write error."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error
