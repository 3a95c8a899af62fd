"""A real Ray cluster of two nodes (two raylets) on 127.0.0.1, for the scale-out tests.

Everything binds to loopback and sends nothing elsewhere: node_ip_address is 127.0.0.1
(checked with ``ray.nodes()``), usage stats and the dashboard are off
(../shared/docs/scale-out-facts.md: Ray may otherwise advertise the machine's network
interface and hang). The object store is capped at 150 MB per node.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
OBJECT_STORE_BYTES = 150 * 1024**2
#: Set before Ray is imported by anything (the tests' driver and the raylets it starts).
RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    "RAY_DEDUP_LOGS": "0",
}


# Ray reads these once, when it is first imported: set them before anything imports it
# (with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER read late, a driver resolves 127.0.0.1 to the
# machine's interface address and hangs on "Failed to connect to GCS").
for _name, _value in RAY_ENV.items():
    os.environ.setdefault(_name, _value)


def ray_available() -> bool:
    """Whether Ray is installed (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


needs_ray = pytest.mark.skipif(not ray_available(),
                               reason="Ray is not installed: pip install 'featstore[ray]'")


class TwoNodeCluster:
    """A head and one worker node, each with ``cpus`` CPU slots, on 127.0.0.1."""

    def __init__(self, cpus: float = 1):
        from ray.cluster_utils import Cluster

        self.cpus = cpus
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": cpus, "node_ip_address": LOOPBACK,
            "object_store_memory": OBJECT_STORE_BYTES, "include_dashboard": False,
            "dashboard_host": LOOPBACK})
        self.worker = self.add_node()
        self.cluster.wait_for_nodes()
        self.address = self.cluster.address
        self.check_loopback()

    def add_node(self, **resources: Any) -> Any:
        """Start one more raylet (e.g. to replace a removed one)."""
        node = self.cluster.add_node(num_cpus=self.cpus, node_ip_address=LOOPBACK,
                                     object_store_memory=OBJECT_STORE_BYTES, **resources)
        return node

    def remove_node(self, node: Any) -> None:
        """Kill a raylet and its workers at once (no graceful drain): a node lost mid-job."""
        self.cluster.remove_node(node, allow_graceful=False)

    def check_loopback(self) -> None:
        import ray

        connected = ray.is_initialized()
        if not connected:
            ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
        try:
            addresses = {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}
        finally:
            if not connected:
                ray.shutdown()
        assert addresses == {LOOPBACK}, f"Ray nodes advertise {addresses}, not only {LOOPBACK}"

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()
