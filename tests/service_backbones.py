"""Cheap plugin backbones (``service_backbones:NAME``) for tests/test_service.py.

They count what the service does, in files named by environment variables of the
server (inherited by its workers):

* ``FEATSTORE_TEST_LOADS``: one line ``PID NAME`` per backbone built;
* ``FEATSTORE_TEST_CALLS``: one line ``PID NAME ROWS`` per forward pass;
* ``FEATSTORE_TEST_SLOW``: seconds each forward pass sleeps (the kill -9 test);
* ``FEATSTORE_TEST_GATE``: while this file exists, forward passes wait (the limits test).

None of these change the features, so a run with them matches one without.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import numpy as np
import torch

from featstore.backbones import Backbone

SIZE = 16  # the test images are 16 x 16


def _to_vector(image: Any) -> torch.Tensor:
    """PIL image -> flat float32 vector of SIZE x SIZE x 3 (module level: picklable)."""
    arr = np.asarray(image.convert("RGB").resize((SIZE, SIZE)), dtype=np.float32) / 255.0
    return torch.from_numpy(arr).flatten()


def _count(variable: str, line: str) -> None:
    path = os.environ.get(variable)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class Counting(Backbone):
    """A fixed random linear map of the pixels, seeded by its name."""

    modality = "image"
    num_features = 8

    def __init__(self, name: str, fail: bool = False):
        self.name, self.fail = name, fail
        self.id = f"service_backbones:{name}"
        seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
        self.weights = torch.from_numpy(
            np.random.default_rng(seed).normal(size=(SIZE * SIZE * 3, self.num_features))
            .astype(np.float32))
        self.slow = float(os.environ.get("FEATSTORE_TEST_SLOW") or 0)
        _count("FEATSTORE_TEST_LOADS", f"{os.getpid()} {name}")

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "weights_sha256": hashlib.sha256(self.name.encode()).hexdigest(),
                "layer": "linear", "pooling": "none", "preprocessing": {"size": SIZE}}

    def transform(self, train: bool = False) -> Any:
        return _to_vector

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        gate = os.environ.get("FEATSTORE_TEST_GATE")
        deadline = time.time() + 120
        while gate and os.path.exists(gate) and time.time() < deadline:
            time.sleep(0.05)
        if self.slow:
            time.sleep(self.slow)
        _count("FEATSTORE_TEST_CALLS", f"{os.getpid()} {self.name} {len(batch)}")
        if self.fail:
            raise RuntimeError("this backbone is broken on purpose")
        return batch @ self.weights


def alpha(**options: Any) -> Backbone:
    return Counting("alpha")


def beta(**options: Any) -> Backbone:
    return Counting("beta")


def gamma(**options: Any) -> Backbone:
    return Counting("gamma")


def delta(**options: Any) -> Backbone:
    return Counting("delta")


def slow(**options: Any) -> Backbone:
    return Counting("slow")


def broken(**options: Any) -> Backbone:
    return Counting("broken", fail=True)
