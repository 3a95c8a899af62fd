"""The settings of `featstore serve`: where it listens, its workers, and its limits.

Every option is checked here, before anything starts (a port, a queue or a worker), so
a bad one is one ``Error:`` line and nothing else happens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from featstore.errors import ConfigError
from featstore.workflows.service.requests import DEFAULT_LIMITS
from featstore.workflows.service.tokens import TokenSet

#: Seconds a worker gets to stop (and commit its queued chunks) before it is killed.
STOP_GRACE = 30.0
#: Seconds between two looks at the workers and the leases.
TICK = 0.5
#: Headers a request may have; more are refused with 431 (as http.server did).
MAX_HEADERS = 100
#: Bytes of a request line and its headers together; more are refused with 414 or 431.
MAX_HEAD_BYTES = 16384


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
    ray: str | None = None                # a Ray cluster's address: workers are its actors

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
        if self.ray is not None:
            from featstore.utils.cluster import check_address

            self.ray = check_address(self.ray)


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


def parse_ray_devices(spec: str) -> list[str]:
    """The workers of ``serve --ray``: ``auto`` (one per GPU of the cluster, else one per
    CPU; resolved once connected) or a list of ``cpu`` and ``cuda`` entries, one Ray actor
    each. A GPU actor gets a GPU of its own from Ray, so an index (``cuda:1``) means
    nothing there and is refused. Needs neither torch nor Ray."""
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return ["auto"]
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if item in ("cpu", "cuda", "gpu"):
            out.append("cuda" if item == "gpu" else item)
        elif item:
            raise ConfigError(
                "With --ray, --devices names the kinds of Ray workers: auto (one per GPU of "
                "the cluster, else one per CPU) or a list of cpu and cuda, e.g. cuda,cuda "
                f"(Ray gives each cuda worker a GPU of its own). Got {item!r} in {spec!r} "
                "instead.")
    if not out:
        raise ConfigError("--devices must name at least one worker: auto, cpu,cpu or cuda,cuda. "
                          f"Got {spec!r} instead.")
    return out
