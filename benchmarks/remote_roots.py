"""Remote roots and copy: what an S3-compatible server costs against a local folder.

    .venv/bin/python benchmarks/remote_roots.py [--rows 20000] [--dim 1280] [--rounds 3]

Starts moto's S3 server on 127.0.0.1 (a Python server: far slower than real S3 or
MinIO, so the ratios below are an upper bound on the overhead, not a forecast of
AWS), writes one feature set of Lite0-like features (float16, 75 % exact zeros, as
measured in docs/storage.md) to a local root, then measures, as ratios in one run:

1. `copy` local → S3 and S3 → local, against a plain recursive copy of the same files
   with fsspec (`fs.put` / `fs.get`): what featstore's read-back check, chunk
   verification and metadata-last ordering cost;
2. a second `copy` (everything up to date): the cost of finding nothing to do;
3. a full read (`load_features`) from S3 against the local root; and a read of rows
   inside one chunk (lazy: one chunk fetched) against the full read.

Timings are medians over --rounds rounds.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from _common import machine, print_table, save
from featstore.workflows.sharing import copy_root
from featstore.store import Root, create_store, open_store, schema


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    exe = str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    return proc, endpoint


def make_store(root: Path, rows: int, dim: int, chunk_rows: int) -> Path:
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (rows, dim)).astype(np.float16)
    x[rng.random((rows, dim)) < 0.75] = 0
    path = root / "0123456789abcdef01234567.zarr"
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": path.stem, "complete": False,
            "n_samples": rows, "n_features": dim, "n_views": 1, "dtype": "float16",
            "codec": "zstd", "chunk_rows": chunk_rows, "backbone": {"id": "bench"},
            "dataset": {"name": "bench", "split": "train"}}
    store = create_store(path, metadata=meta, n_features=dim, n_views=1, dtype="float16",
                         chunk_rows=chunk_rows, sample_ids=[f"s{i}" for i in range(rows)],
                         labels=np.zeros(rows, np.int64), codec="zstd")
    with store:
        for c in range(store.n_chunks):
            a, b = schema.chunk_bounds(c, rows, chunk_rows)
            store.write_chunk(c, x[a:b], np.ones(b - a, bool))
        store.mark_complete()
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    import s3fs

    proc, endpoint = start_moto()
    tmp = Path(tempfile.mkdtemp(prefix="featstore-bench-remote-"))
    try:
        fs = s3fs.S3FileSystem(skip_instance_cache=True)
        local = tmp / "local"
        src = make_store(local, args.rows, args.dim, args.chunk_rows)
        n_files = sum(1 for p in src.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
        times: dict[str, list[float]] = {k: [] for k in (
            "copy_to_s3", "plain_put", "copy_up_to_date", "copy_from_s3", "plain_get",
            "read_local", "read_s3", "read_one_chunk_s3")}
        for r in range(args.rounds):
            bucket = f"b{uuid.uuid4().hex[:10]}"
            fs.mkdir(bucket)
            s3_root = f"s3://{bucket}/features"

            t = time.perf_counter()
            (res,) = copy_root(local, s3_root, progress=False)
            times["copy_to_s3"].append(time.perf_counter() - t)
            assert res.status == "copied" and res.verified
            t = time.perf_counter()
            fs.put(str(src), f"{bucket}/plain/{src.name}", recursive=True)
            times["plain_put"].append(time.perf_counter() - t)
            t = time.perf_counter()
            (again,) = copy_root(local, s3_root, progress=False)
            times["copy_up_to_date"].append(time.perf_counter() - t)
            assert again.status == "up to date"

            back = tmp / f"back{r}"
            t = time.perf_counter()
            copy_root(s3_root, back, progress=False)
            times["copy_from_s3"].append(time.perf_counter() - t)
            plain = tmp / f"plain{r}"
            t = time.perf_counter()
            fs.get(f"{bucket}/plain/{src.name}", str(plain), recursive=True)
            times["plain_get"].append(time.perf_counter() - t)

            with open_store(src) as a:
                t = time.perf_counter()
                want = a.load_features()
                times["read_local"].append(time.perf_counter() - t)
            remote = Root(s3_root).find("0123").path
            with open_store(remote) as b:
                t = time.perf_counter()
                got = b.load_features()
                times["read_s3"].append(time.perf_counter() - t)
                t = time.perf_counter()
                b.features[10:20]
                times["read_one_chunk_s3"].append(time.perf_counter() - t)
            assert np.array_equal(want, got)
            shutil.rmtree(back)
            shutil.rmtree(plain)
        med = {k: float(np.median(v)) for k, v in times.items()}
        ratios = {
            "copy_to_s3 / plain fs.put": med["copy_to_s3"] / med["plain_put"],
            "copy_from_s3 / plain fs.get": med["copy_from_s3"] / med["plain_get"],
            "copy up to date / copy_to_s3": med["copy_up_to_date"] / med["copy_to_s3"],
            "read_s3 / read_local": med["read_s3"] / med["read_local"],
            "read one chunk / read all (s3)": med["read_one_chunk_s3"] / med["read_s3"],
        }
        rows = [{"measure": k, "ratio": f"{v:.3f}"} for k, v in ratios.items()]
        print(f"\n{args.rows} x {args.dim} float16, {n_files} files, {size / 2**20:.1f} MiB "
              f"on disk; moto S3 on {endpoint}; medians of {args.rounds} rounds")
        print_table(rows, ["measure", "ratio"])
        print_table([{"step": k, "seconds": f"{v:.3f}"} for k, v in med.items()],
                    ["step", "seconds"])
        save("remote_roots", {"machine": machine(), "args": vars(args), "files": n_files,
                              "bytes": size, "seconds": med, "ratios": ratios})
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
