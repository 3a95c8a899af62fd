"""Embedding-API throughput against the number of requests in flight.

    .venv/bin/python benchmarks/api_concurrency.py [--texts 1024] [--per-request 16]
        [--latency 0.05] [--repeats 3]

A local OpenAI-compatible ``/v1/embeddings`` server on 127.0.0.1 (a ThreadingHTTPServer)
answers every request after a fixed latency (50 ms by default), whatever its size, as a
remote service's round trip does. Two servers: one that serves any number of requests at
once, and one that serves at most 8 at once (the others wait in line: a server's limit).

For concurrency 1, 4 and 16 (``texts_per_request`` fixed), two measurements:

* ``encode``: ``OpenAIEmbeddings.encode`` on all texts in batches of
  ``preferred_batch_rows`` (what the extractor asks for);
* ``extract``: ``featstore.extract`` end to end (CSV data set, Zarr store, 1,024-row
  chunks, ``force=True``): key, store, the model fingerprint probe, writes.

Goal: near-linear speed-up until the server's limit: speed-up(c) / min(c, limit) close to
1. Runs are interleaved (every other repeat in reverse order) and medians are reported;
the ratio is taken within one repeat, so a shared machine's drift cancels. The load
average is recorded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from _common import machine, print_table, save

DIM = 64
CONCURRENCY = (1, 4, 16)
SERVER_LIMIT = 8


def _vector(text: str) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=DIM).round(6).tolist()


def _serve_forever(latency: float, limit: int | None, ports: "mp.Queue") -> None:
    """An OpenAI-compatible embeddings server on 127.0.0.1 (in its own process, so that
    its JSON work does not take the client's GIL)."""
    slots = threading.BoundedSemaphore(limit) if limit else None

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real services
        disable_nagle_algorithm = True  # TCP_NODELAY, as real services (else +40 ms per answer)

        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if slots is not None:
                slots.acquire()
            try:
                time.sleep(latency)
            finally:
                if slots is not None:
                    slots.release()
            data = [{"object": "embedding", "index": i, "embedding": _vector(t)}
                    for i, t in enumerate(body["input"])]
            raw = json.dumps({"object": "list", "data": data, "model": body["model"]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # socketserver's 5 would drop connection attempts at c=16
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    ports.put(server.server_address[1])
    server.serve_forever()


def serve(latency: float, limit: int | None) -> tuple[str, "mp.Process"]:
    """(base URL, process) of a started server."""
    ports: mp.Queue = mp.Queue()
    proc = mp.Process(target=_serve_forever, args=(latency, limit, ports), daemon=True)
    proc.start()
    return f"http://127.0.0.1:{ports.get(timeout=30)}/v1", proc


def run_encode(url: str, texts: list[str], per_request: int, concurrency: int) -> float:
    from featstore.backbones.openai_api import OpenAIEmbeddings

    bb = OpenAIEmbeddings("bench", base_url=url, texts_per_request=per_request,
                          concurrency=concurrency)
    step = bb.preferred_batch_rows
    t0 = time.perf_counter()
    for i in range(0, len(texts), step):
        out = bb.encode(texts[i:i + step])
        assert out.shape[1] == DIM
    return time.perf_counter() - t0


def run_extract(url: str, data: Path, root: Path, per_request: int, concurrency: int) -> float:
    from featstore.extract import ExtractConfig, extract

    os.environ["OPENAI_BASE_URL"] = url
    cfg = ExtractConfig(backbones=["openai:bench"], datasets=[str(data)], root=str(root),
                        texts_per_request=per_request, concurrency=concurrency, force=True,
                        progress=False)
    t0 = time.perf_counter()
    [result] = extract(cfg)
    assert result.shape[0] > 0 and not result.cached
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--per-request", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("OPENAI_API_KEY", "sk-bench")
    info = machine()
    texts = [f"review {i}: " + "good " * (i % 17) for i in range(args.texts)]
    servers = {"unlimited": serve(args.latency, None), f"limit {SERVER_LIMIT}": serve(
        args.latency, SERVER_LIMIT)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp, "texts.csv")
        data.write_text("text,label\n" + "\n".join(f"{t},{i % 2}" for i, t in enumerate(texts)))
        times: dict[tuple[str, str, int], list[float]] = {}
        for r in range(args.repeats):
            order = CONCURRENCY if r % 2 == 0 else CONCURRENCY[::-1]
            for name, (url, _) in servers.items():
                for c in order:
                    times.setdefault((name, "encode", c), []).append(
                        run_encode(url, texts, args.per_request, c))
                    times.setdefault((name, "extract", c), []).append(
                        run_extract(url, data, Path(tmp, "root"), args.per_request, c))
        for name in servers:
            limit = SERVER_LIMIT if name.startswith("limit") else None
            for mode in ("encode", "extract"):
                base = times[(name, mode, 1)]
                for c in CONCURRENCY:
                    runs = times[(name, mode, c)]
                    speedup = statistics.median(b / t for b, t in zip(base, runs))
                    ideal = min(c, limit) if limit else c
                    rows.append({"server": name, "mode": mode, "concurrency": c,
                                 "seconds": round(statistics.median(runs), 3),
                                 "texts_per_s": round(args.texts / statistics.median(runs), 1),
                                 "speedup": round(speedup, 2), "ideal": ideal,
                                 "efficiency": round(speedup / ideal, 2)})
    for _, proc in servers.values():
        proc.terminate()
    print_table(rows, ["server", "mode", "concurrency", "seconds", "texts_per_s", "speedup",
                       "ideal", "efficiency"])
    out = save("api_concurrency", {
        **info, "texts": args.texts, "texts_per_request": args.per_request,
        "latency_s": args.latency, "dim": DIM, "repeats": args.repeats,
        "requests_per_run": -(-args.texts // args.per_request), "server_limit": SERVER_LIMIT,
        "goal": "speedup / min(concurrency, server limit) close to 1 (near-linear)",
        "rows": rows})
    print(f"saved {out}")


if __name__ == "__main__":
    main()
