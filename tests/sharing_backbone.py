"""A cheap text backbone (``sharing_backbone:make``) that records its loads and forward
passes in the file named by $FEATSTORE_TEST_CALLS, and can be slowed down per batch
($FEATSTORE_TEST_DELAY seconds), so that tests can count computations across processes."""

from __future__ import annotations

import os
import time

import torch

from featstore.backbones import Backbone


def _record(line: str) -> None:
    path = os.environ.get("FEATSTORE_TEST_CALLS")
    if path:
        with open(path, "a") as f:  # one short append per call: atomic on a local disk
            f.write(f"{line} {os.getpid()}\n")


class CharCounts(Backbone):
    id, modality, num_features = "sharing_backbone:make", "text", 4

    def __init__(self) -> None:
        _record("load")

    def provenance(self):
        return {"id": self.id, "weights_sha256": None, "layer": "counts", "pooling": "none",
                "preprocessing": {}}

    def encode(self, batch):
        _record(f"forward {len(batch)}")
        time.sleep(float(os.environ.get("FEATSTORE_TEST_DELAY", "0")))
        return torch.tensor([[len(t), t.count("a"), t.count("e"), t.count(" ")] for t in batch],
                            dtype=torch.float32)


def make(**options):
    return CharCounts()


def calls(path) -> dict[str, int]:
    """{'load': n, 'forward': samples encoded} from a calls file."""
    out = {"load": 0, "forward": 0, "forward_pids": set()}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split()
        if parts[0] == "load":
            out["load"] += 1
        else:
            out["forward"] += int(parts[1])
            out["forward_pids"].add(parts[2])
    return out
