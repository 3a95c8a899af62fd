"""Store write/read throughput per codec and format, against .npy and plain HDF5.

    python benchmarks/store_io.py [--rows 50000]

Uses REAL features: EfficientNet-Lite0 (112 px) of the 5,000 MNIST-5k images,
extracted once into benchmarks/.cache (a featstore root) and tiled to --rows rows.
Reports compression, write and full-read GB/s, ratios to .npy, and whether float16
storage changes a logistic probe's accuracy against float32.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np

from _common import CACHE, print_table, save, timed
from featstore.extract import ExtractConfig, extract
from featstore.store import create_store, open_store, schema


def real_features() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cfg = ExtractConfig(backbones=["efficientnet-lite0"], datasets=["mnist-5k"],
                        splits=["train", "test"], root=str(CACHE), dtype="float32",
                        image_size=112, progress=False)
    tr, te = extract(cfg)
    with open_store(tr.path) as a, open_store(te.path) as b:
        return a.load_features(), a.labels, b.load_features(), b.labels


def du(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_store(path: Path, x: np.ndarray, codec: str, rows: int) -> Path:
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "bench", "complete": False,
            "n_samples": len(x), "n_features": x.shape[1], "chunk_rows": rows}
    store = create_store(path, metadata=meta, n_features=x.shape[1], n_views=1,
                         dtype=str(x.dtype), chunk_rows=rows,
                         sample_ids=[str(i) for i in range(len(x))], labels=None, codec=codec)
    valid = np.ones(rows, bool)
    for c in range(schema.n_chunks(len(x), rows)):
        s, e = schema.chunk_bounds(c, len(x), rows)
        store.write_chunk(c, x[s:e], valid[: e - s])
    store.mark_complete()
    final = store.path
    store.close()
    return final


def probe(xtr, ytr, xte, yte) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.1))
    return float(clf.fit(xtr.astype(np.float32), ytr).score(xte.astype(np.float32), yte))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    args = ap.parse_args()
    xtr, ytr, xte, yte = real_features()
    acc32, acc16 = probe(xtr, ytr, xte, yte), probe(xtr.astype(np.float16), ytr, xte.astype(np.float16), yte)
    diff = float(np.abs(xtr.astype(np.float16).astype(np.float32) - xtr).max())
    zeros = float((xtr == 0).mean())
    base = np.concatenate([xtr, xte])
    rows_out, out = [], {"rows": args.rows, "dim": base.shape[1], "zero_fraction": zeros,
                         "float16": {"probe_acc_f32": acc32, "probe_acc_f16": acc16, "max_abs_diff": diff},
                         "runs": []}
    tmp = Path(tempfile.mkdtemp())
    try:
        for dtype in ("float16", "float32"):
            x = np.resize(base, (args.rows, base.shape[1])).astype(dtype)
            gb = x.nbytes / 1e9
            npy = tmp / "x.npy"
            w_npy = timed(lambda: np.save(npy, x))
            r_npy = timed(lambda: np.load(npy))
            plain = tmp / "plain.h5"

            def h5_write():
                with h5py.File(plain, "w") as f:
                    f.create_dataset("x", data=x, chunks=(args.chunk_rows, x.shape[1]))

            def h5_read():
                with h5py.File(plain, "r") as f:
                    f["x"][:]

            w_h5, r_h5 = timed(h5_write), timed(h5_read)
            runs = [("npy", "-", w_npy, r_npy, du(npy)), ("hdf5 (plain h5py)", "none", w_h5, r_h5, du(plain))]
            for fmt, suffix in (("zarr", ".zarr"), ("hdf5", ".h5")):
                for codec in ("zstd", "blosc-zstd", "lz4", "none"):
                    target = tmp / f"s{suffix}"

                    def w():
                        for p in (target, Path(str(target) + ".partial")):
                            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                        write_store(target, x, codec, args.chunk_rows)

                    def r():
                        with open_store(target) as fs:
                            fs.load_features()

                    wt = timed(w, 2)
                    rt = timed(r)
                    runs.append((f"featstore {fmt}", codec, wt, rt, du(target)))
            for name, codec, wt, rt, size in runs:
                rec = {"dtype": dtype, "format": name, "codec": codec,
                       "compression": round(x.nbytes / size, 2),
                       "write_GBps": round(gb / wt, 3), "read_GBps": round(gb / rt, 3),
                       "write_vs_npy": round(w_npy / wt, 3), "read_vs_npy": round(r_npy / rt, 3),
                       "write_vs_h5": round(w_h5 / wt, 3), "read_vs_h5": round(r_h5 / rt, 3),
                       "MB_on_disk": round(size / 1e6, 1)}
                out["runs"].append(rec)
                rows_out.append(rec)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"features: {base.shape[1]}-d, {zeros:.1%} exact zeros; float16 max abs diff {diff:.2e}; "
          f"probe accuracy float32 {acc32:.4f} vs float16 {acc16:.4f}")
    print_table(rows_out, ["dtype", "format", "codec", "compression", "write_GBps", "read_GBps",
                           "write_vs_npy", "read_vs_npy", "write_vs_h5", "read_vs_h5", "MB_on_disk"])
    print("saved", save("store_io", out))


if __name__ == "__main__":
    main()
