"""featstore: run each frozen backbone once, keep its features, tune heads on the cache."""

from __future__ import annotations

__version__ = "0.1.0"
