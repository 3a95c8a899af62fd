"""`featstore sweep --ray`: the sweep's runs as Ray tasks on a cluster.

The driver expands the grid, skips runs already in the results file and appends the
others' records itself, in the grid's order, exactly as the local sweep does
(:func:`featstore.workflows.sweep.sweep` with this module's :class:`RayRuns` as its
executor). Each run is one Ray task of one CPU slot that reads its stores from their
shared location (a folder mounted at the same path on every node, or ``s3://``) and
runs with the local sweep's pinned thread count, so its record holds the same numbers
as a local run's, up to timings. A task lost with its worker node is retried by Ray
(a run is a pure function of its stores and settings, so a repeat gives the same
record); a run that fails with an error fails the sweep once, without retries.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from featstore.errors import FeatstoreError
from featstore.utils.cluster import connect, shared_path

#: Times Ray reruns a task whose worker died (a node lost); an error raised by the run
#: itself is never retried.
MAX_RETRIES = 3


class RayRuns:
    """An executor for :func:`featstore.workflows.sweep.sweep` that runs each run as a
    Ray task on the cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``).

    ``timeout``: seconds to wait for any one run's result (``None``: no limit).
    """

    def __init__(self, address: str, *, timeout: float | None = None):
        self.ray = connect(address)
        self.timeout = timeout
        #: CPU slots of the cluster: how many runs may execute at once.
        self.workers = int(self.ray.cluster_resources().get("CPU", 1))

    def __call__(self, todo: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]]
                 ) -> Iterator[dict[str, Any]]:
        ray = self.ray
        remote = ray.remote(num_cpus=1, max_retries=MAX_RETRIES)(fn)
        refs = [remote.remote(_shared_run(r)) for r in todo]
        i = 0
        try:
            for i, ref in enumerate(refs):
                yield self._get(ref, self.timeout)
        except Exception:
            # A failed run stops the sweep: runs not finished are cancelled; later runs
            # that had finished are still kept (a rerun then skips them).
            later = refs[i + 1:]
            ready = set(ray.wait(later, num_returns=len(later), timeout=0)[0]) if later else set()
            for ref in later:
                if ref not in ready:
                    ray.cancel(ref)
            yield from self._finished([r for r in later if r in ready])
            raise
        finally:
            for ref in refs[i + 1:]:
                ray.cancel(ref)  # a no-op for finished tasks

    def _get(self, ref: Any, timeout: float | None) -> dict[str, Any]:
        """A run's record, or the featstore error it raised (not Ray's wrapper of it)."""
        try:
            return self.ray.get(ref, timeout=timeout)
        except self.ray.exceptions.RayTaskError as err:
            if isinstance(err.cause, FeatstoreError):
                raise err.cause from None
            raise

    def _finished(self, refs: list[Any]) -> Iterator[dict[str, Any]]:
        for ref in refs:
            try:
                rec = self._get(ref, 0)
            except Exception:
                continue  # failed too: the rerun redoes it
            yield rec


def _shared_run(run: dict[str, Any]) -> dict[str, Any]:
    return {**run, "train": shared_path(run["train"]), "test": shared_path(run["test"]),
            "ood": [shared_path(o) for o in run["ood"]]}
