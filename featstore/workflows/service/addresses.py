"""Which hosts are this machine: the one loopback check of the service and its client.

The server warns when it listens anywhere else (tokens would cross a network in clear
text); the client talks to a service on this machine without the environment's proxies
(a proxy would not reach 127.0.0.1).
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
