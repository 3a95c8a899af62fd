"""Connecting to a Ray cluster: the one place that imports Ray and parses ``--ray``.

Ray is an optional extra (``pip install 'featstore[ray]'``). Every ``--ray ADDRESS``
option (``extract``, ``serve``, ``sweep``, ``spectrum``) goes through :func:`connect`.
"""

from __future__ import annotations

import re
from typing import Any

from featstore.errors import ConfigError, MissingDependencyError

INSTALL_HINT = "pip install 'featstore[ray]'"
_HOST_PORT = re.compile(r"^(ray://)?[A-Za-z0-9_.\-\[\]:]+:\d{1,5}$")


def require_ray() -> Any:
    """The ``ray`` module, or one clear line saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise MissingDependencyError(
            f"--ray needs Ray, which is not installed: {INSTALL_HINT}") from err
    return ray


def check_address(address: str) -> str:
    """``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``; anything else is a ConfigError."""
    address = str(address).strip()
    if address == "auto" or _HOST_PORT.match(address):
        return address
    raise ConfigError(f"--ray {address!r}: expected 'auto' (the cluster this machine belongs "
                      "to), HOST:PORT of a Ray head (e.g. 10.0.0.5:6379) or ray://HOST:PORT "
                      "(Ray Client).")


def connect(address: str) -> Any:
    """Connect this process to the Ray cluster at ``address`` (once) and return ``ray``.

    Connecting twice to the same cluster is a no-op; logs of remote workers are not
    copied to this process's terminal (featstore reports progress itself).
    """
    address = check_address(address)
    ray = require_ray()
    if not ray.is_initialized():
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level="ERROR", log_to_driver=False,
                     configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            raise ConfigError(f"Cannot connect to the Ray cluster at {address}: {err}. Start "
                              "one with `ray start --head` or check the address.") from err
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """A HOST:PORT nobody answers on is one clear line, not Ray's endless retries."""
    if address == "auto":
        return
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(f"Cannot connect to the Ray cluster at {address}: nothing answers "
                          f"there ({err.strerror or err}). Start one with `ray start --head` "
                          "or check the address.") from err


def shared_path(path: Any) -> str:
    """``path`` as every node of a cluster can resolve it: a local path made absolute (the
    driver's working directory means nothing on a worker), a URL (``s3://``) unchanged."""
    import os

    path = str(path)
    return path if "://" in path else os.path.abspath(path)
