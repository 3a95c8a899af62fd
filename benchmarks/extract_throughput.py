"""Extraction throughput against the bare forward pass on the same inputs and device.

    python benchmarks/extract_throughput.py [--n 2000] [--image-size 112] [--batch-size 64]

The bare pass gets pre-transformed tensors already in memory (no decoding, no I/O,
no writes); featstore does everything (decode + transform, forward, write whole
compressed chunks). Goal: ratio >= 0.95. Also tries 0, 1 and 2 decode workers.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from _common import print_table, save
from featstore.backbones import create_backbone
from featstore.data import load_dataset
from featstore.extract import ExtractConfig, extract_one


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    samples = load_dataset("mnist-5k", "train", limit=args.n)
    bb = create_backbone("efficientnet-lite0", image_size=args.image_size).to(device)

    tf = bb.transform()
    inputs = torch.stack([tf(samples.load(i)) for i in range(len(samples))])
    bb.encode(inputs[: args.batch_size])  # warm-up
    t0 = time.perf_counter()
    for s in range(0, len(inputs), args.batch_size):
        bb.encode(inputs[s: s + args.batch_size])
    bare = len(inputs) / (time.perf_counter() - t0)

    rows = [{"run": "bare forward (tensors in memory)", "samples/s": f"{bare:.1f}", "ratio": "1.00"}]
    out = {"n": len(samples), "image_size": args.image_size, "batch_size": args.batch_size,
           "device": str(device), "bare_samples_per_s": bare, "featstore": {}}
    for workers in (0, 1, 2):
        with tempfile.TemporaryDirectory() as root:
            cfg = ExtractConfig(backbones=["efficientnet-lite0"], datasets=["mnist-5k"], root=root,
                                batch_size=args.batch_size, num_workers=workers, progress=False,
                                image_size=args.image_size)
            t0 = time.perf_counter()
            res = extract_one(bb, samples, cfg, device)
            total = len(samples) / (time.perf_counter() - t0)
        loop = res.samples_per_second or 0.0
        out["featstore"][f"workers={workers}"] = {"end_to_end": total, "loop": loop}
        rows.append({"run": f"featstore extract, {workers} workers (end to end)",
                     "samples/s": f"{total:.1f}", "ratio": f"{total / bare:.2f}"})
        rows.append({"run": f"featstore extract, {workers} workers (decode+forward+write loop)",
                     "samples/s": f"{loop:.1f}", "ratio": f"{loop / bare:.2f}"})
    print_table(rows, ["run", "samples/s", "ratio"])
    print("saved", save("extract_throughput", out))


if __name__ == "__main__":
    main()
