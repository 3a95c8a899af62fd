"""`featstore extract --ray` on a real two-node Ray cluster on this machine (127.0.0.1).

Measures, as ratios within one run (interleaved repeats, medians; the machine is shared):

* Ray with 2 single-thread actors vs Ray with 1 (goal ≥ 1.7×);
* Ray with 2 single-thread actors vs one process with the same 2 threads (goal ≥ 0.9);
* after a worker node is killed mid-job: how long until the lost chunk is detected and
  given to the surviving actor, and the job's time against the same job without a loss.

Times are steady state: each configuration's actors (or the process) first extract
the set once untimed (model loaded, imports done), then the timed run extracts it again
with --force. Every run writes the same bytes (checked). The one-actor case keeps the
other CPU slot busy with an idle actor, so its second actor is never placed.

    .venv/bin/python benchmarks/scale_out.py --n 256 --image-size 112
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import ray_cluster  # noqa: E402  (sets Ray's environment before anything imports Ray)

from _common import load_mnist5k, machine, print_table, save, spread  # noqa: E402


class Blocker:
    """An idle actor holding one CPU slot."""

    def ping(self) -> bool:
        return True


def config(data: Path, root: Path, args: argparse.Namespace, **kw):
    from featstore.extract import ExtractConfig

    return ExtractConfig(backbones=["timm:efficientnet_lite0"], datasets=[str(data)],
                         root=str(root), pretrained=False, image_size=args.image_size,
                         chunk_rows=args.chunk_rows, batch_size=args.batch_size, num_workers=0,
                         progress=False, force=True, **kw)


def run_once(cfg, pool=None) -> tuple[float, str]:
    """One forced extraction, after an untimed warm-up on 32 other images with the same
    pool (actors started, backbone loaded) or process."""
    import torch

    from featstore.backbones import create_backbone
    from featstore.data import load_dataset
    from featstore.extract.pipeline import backbone_options, extract_one

    backbone = create_backbone(cfg.backbones[0], **backbone_options(cfg))
    warm = str(Path(cfg.datasets[0]).with_name("warm-up.npz"))
    engine = pool.engine(cfg.backbones[0], warm, "train") if pool else None
    extract_one(backbone, load_dataset(warm, "train"), cfg, torch.device("cpu"), engine=engine)
    samples = load_dataset(cfg.datasets[0], "train")
    engine = pool.engine(cfg.backbones[0], cfg.datasets[0], "train") if pool else None
    t0 = time.perf_counter()
    result = extract_one(backbone, samples, cfg, torch.device("cpu"), engine=engine)
    return time.perf_counter() - t0, result.path


def timed(mode: str, cluster, data: Path, root: Path, args) -> tuple[float, str]:
    import ray
    import torch

    from featstore.extract.pipeline import backbone_options
    from featstore.extract.ray_engine import RayPool

    if mode.startswith("local"):
        threads = int(mode[-1])
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run_once(config(data, root / mode, args, threads=threads))
        finally:
            torch.set_num_threads(before)
    cfg = config(data, root / mode, args, ray=cluster.address, threads=1)
    blocker = None
    if mode == "ray1":  # keep one of the two CPU slots busy
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        blocker = ray.remote(Blocker).options(num_cpus=1).remote()
        ray.get(blocker.ping.remote(), timeout=120)
    pool = RayPool(cfg, backbone_options(cfg))
    try:
        return run_once(cfg, pool)
    finally:
        pool.close()
        if blocker is not None:
            ray.kill(blocker)
        ray.shutdown()
        time.sleep(1.0)  # let the killed actors give their slots back


class _Detected(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.at: float | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if "actor died" in record.getMessage() and self.at is None:
            self.at = time.perf_counter()


def node_loss(cluster, data: Path, root: Path, args) -> dict:
    """A cold job (actors start, load the model) whose worker node dies after a quarter of
    its chunks; against the same cold job without a loss."""
    from featstore.extract import extract

    seen = _Detected()
    logging.getLogger("featstore.extract.ray_engine").addHandler(seen)
    import ray

    out = {}
    for name in ("no_loss", "loss"):
        cfg = config(data, root / f"node-{name}", args, ray=cluster.address, threads=1)
        box: dict = {}
        t0 = time.perf_counter()
        def job(cfg=cfg, box=box) -> None:
            try:
                box["r"] = extract(cfg)
            except BaseException as err:  # reported below
                box["error"] = err

        thread = threading.Thread(target=job)
        thread.start()
        removed_at = None
        if name == "loss":
            n_chunks = -(-args.n // args.chunk_rows)
            digests = root / f"node-{name}"
            while len(list(digests.glob("*.zarr/chunk_sha256/c/*"))) < n_chunks // 4 \
                    and thread.is_alive():
                time.sleep(0.05)
            removed_at = time.perf_counter()
            cluster.remove_node(cluster.worker)
        thread.join(600)
        ray.shutdown()
        if "error" in box:
            raise box["error"]
        out[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        if removed_at is not None:
            out["detected_after_s"] = round(seen.at - removed_at, 2) if seen.at else None
            out["removed_after_s"] = round(removed_at - t0, 2)
            cluster.worker = cluster.add_node()
            out["path"] = box["r"][0].path
    return out


def same_files(a: str, b: str) -> bool:
    """Every file of two Zarr sets but the group's zarr.json (how each was made) is equal."""
    def files(root: str) -> dict:
        return {q.relative_to(root): q.read_bytes() for q in sorted(Path(root).rglob("*"))
                if q.is_file() and q.relative_to(root) != Path("zarr.json")}

    return files(a) == files(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--chunk-rows", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    images, labels = load_mnist5k()
    idx = spread(labels, args.n)
    work = Path(tempfile.mkdtemp(prefix="featstore-scale-out-"))
    data = work / "mnist.npz"
    np.savez(data, x=images[idx], y=labels[idx])
    np.savez(work / "warm-up.npz", x=images[-32:], y=labels[-32:])
    cluster = ray_cluster.TwoNodeCluster()
    modes = ["ray2", "ray1", "local2", "local1"]
    times: dict[str, list[float]] = {m: [] for m in modes}
    paths: dict[str, str] = {}
    try:
        for _ in range(args.repeat):  # interleaved: load drifts hit every mode alike
            for mode in modes:
                seconds, paths[mode] = timed(mode, cluster, data, work, args)
                times[mode].append(seconds)
                print(f"{mode}: {seconds:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
        loss = node_loss(cluster, data, work, args)
    finally:
        cluster.shutdown()
    med = {m: float(np.median(times[m])) for m in modes}
    # Ray's actors pin 1 thread: their sets must be local1's, bit for bit (local2's may
    # differ in the last bits: another thread count).
    identical = {m: same_files(paths["local1"], paths[m]) for m in ("ray2", "ray1", "local2")}
    identical["ray2_after_node_loss"] = same_files(paths["local1"], loss["path"])
    rows = [{"mode": m, "median_s": round(med[m], 2), "images_per_s": round(args.n / med[m], 1),
             "runs": [round(t, 2) for t in times[m]]} for m in modes]
    print_table(rows, ["mode", "median_s", "images_per_s", "runs"])
    result = {
        **info, "n": args.n, "image_size": args.image_size, "chunk_rows": args.chunk_rows,
        "batch_size": args.batch_size, "repeat": args.repeat, "rows": rows,
        "ray2_over_ray1": round(med["ray1"] / med["ray2"], 3), "goal_ray2_over_ray1": 1.7,
        "ray2_over_local2": round(med["local2"] / med["ray2"], 3), "goal_ray2_over_local2": 0.9,
        "ray1_over_local1": round(med["local1"] / med["ray1"], 3),
        "node_loss": {k: v for k, v in loss.items() if k != "path"},
        "same_chunk_files_as_local1": identical,
    }
    print({k: v for k, v in result.items() if k != "rows"})
    print("wrote", save("scale_out", result))


if __name__ == "__main__":
    main()
