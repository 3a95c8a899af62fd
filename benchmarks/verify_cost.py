"""What checking reads against their sha256 costs (issue 10, item 5).

    .venv/bin/python benchmarks/verify_cost.py [--rows 50000] [--dim 1280] [--rounds 3]

A --rows × --dim float16 Zarr store with the default codec (Zstd level 3, 1,024-row
chunks) is written once with featstore, from synthetic ReLU-like features (about 75 %
exact zeros, as EfficientNet-Lite0's penultimate features are; docs/storage.md), then:

1. ``load_features()`` with ``verify_reads`` on (every chunk hashed and compared) and
   off (``FEATSTORE_VERIFY_READS=0``);
2. ``iter_chunks()`` streamed through, on and off;
3. ``open_store`` of the complete set, with the checks made on open (arrays present and
   shaped as the metadata says, every chunk file listed) and without them
   (``allow_damaged=True``).

Medians of --rounds rounds; each round runs the configurations in alternating order,
so a busy shared machine slows them alike. Ratios are printed and written to
benchmarks/results/verify_cost.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import machine, print_table, save
from featstore.store import create_store, open_store, schema


def make_store(path: Path, rows: int, dim: int, chunk_rows: int = 1024) -> np.ndarray:
    """A complete float16 Zstd store of ReLU-like features; returns the features."""
    rng = np.random.default_rng(0)
    x = np.maximum(rng.standard_normal((rows, dim), dtype=np.float32) - 0.66, 0).astype(np.float16)
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "verifycost", "complete": False,
            "n_samples": rows, "n_features": dim, "n_views": 1, "dtype": "float16",
            "codec": "zstd", "chunk_rows": chunk_rows, "backbone": {"id": "synthetic"},
            "dataset": {"name": "synthetic", "split": "train"}}
    store = create_store(path, metadata=meta, n_features=dim, n_views=1, dtype="float16",
                         chunk_rows=chunk_rows, sample_ids=[f"s{i}" for i in range(rows)],
                         labels=np.arange(rows) % 10, codec="zstd")
    for c in range(schema.n_chunks(rows, chunk_rows)):
        s, e = schema.chunk_bounds(c, rows, chunk_rows)
        store.write_chunk(c, x[s:e], np.ones(e - s, bool))
    store.mark_complete()
    store.close()
    return x


def _load(path: Path, verify: bool) -> np.ndarray:
    with open_store(path, verify_reads=verify) as fs:
        return fs.load_features()


def _stream(path: Path, verify: bool) -> int:
    with open_store(path, verify_reads=verify) as fs:
        return sum(len(block) for _, _, block in fs.iter_chunks())


def _open(path: Path, checks: bool) -> None:
    open_store(path, allow_damaged=not checks).close()


def measure(path: Path, rounds: int) -> dict[str, float]:
    """Median seconds of each configuration over ``rounds`` alternating rounds."""
    cases = {
        "load_features, verified": lambda: _load(path, True),
        "load_features, not verified": lambda: _load(path, False),
        "iter_chunks, verified": lambda: _stream(path, True),
        "iter_chunks, not verified": lambda: _stream(path, False),
        "open_store, checks on open": lambda: _open(path, True),
        "open_store, no checks": lambda: _open(path, False),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for r in range(rounds):
        order = list(cases) if r % 2 == 0 else list(cases)[::-1]
        for name in order:
            t0 = time.perf_counter()
            cases[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    info = machine()
    with tempfile.TemporaryDirectory(prefix="verify-cost-") as tmp:
        path = Path(tmp) / "set.zarr"
        t0 = time.perf_counter()
        x = make_store(path, args.rows, args.dim)
        written = time.perf_counter() - t0
        np.testing.assert_array_equal(_load(path, True), x)  # the store reads back exactly
        _load(path, False)  # warm the page cache: both sides read from memory
        med = measure(path, args.rounds)
    ratios = {
        "load_features verified / not": med["load_features, verified"]
        / med["load_features, not verified"],
        "iter_chunks verified / not": med["iter_chunks, verified"]
        / med["iter_chunks, not verified"],
        "open_store checks / none": med["open_store, checks on open"]
        / med["open_store, no checks"],
    }
    mb = x.nbytes / 2**20
    rows = [{"case": k, "median s": f"{v:.4f}",
             "MiB/s": f"{mb / v:.0f}" if not k.startswith("open") else "-"} for k, v in med.items()]
    print(f"{args.rows} x {args.dim} float16, Zstd, {mb:.0f} MiB raw, written in {written:.1f} s; "
          f"medians of {args.rounds}")
    print_table(rows, ["case", "median s", "MiB/s"])
    for k, v in ratios.items():
        print(f"{k}: {v:.2f}x")
    out = save("verify_cost", {**info, "rows": args.rows, "dim": args.dim, "raw_mib": round(mb, 1),
                               "rounds": args.rounds, "median_seconds": med,
                               "ratios": {k: round(v, 3) for k, v in ratios.items()}})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
