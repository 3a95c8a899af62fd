"""A real OpenAI-compatible embeddings server on 127.0.0.1, scriptable for failures."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np


def fake_embedding(text: str, dim: int, model: str = "a") -> list[float]:
    """The embedding of ``text`` by the fake model ``model`` (another model: other values
    of the same dimension, as a service restarted with another pooling would give)."""
    salt = "" if model == "a" else f"\x00{model}"
    seed = int.from_bytes(hashlib.sha256((text + salt).encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).round(6).tolist()


class FakeEmbeddings:
    """``with FakeEmbeddings(token="k") as srv: srv.url``; script failures with ``srv.plan``.

    ``plan`` is a list consumed one entry per request: ``"429"`` (with Retry-After: 0),
    ``"500"``, ``"drop"`` (close the socket without answering), ``"dim"`` (wrong
    dimension), or ``"ok"``. An empty plan answers normally.

    ``model`` chooses the fake model behind every name (``"a"``, or any other string for
    another one); ``port`` binds a given port (a restart: the same URL, so the same key).
    ``latency`` is seconds per answer, or a function of the request's texts. ``gate=N``
    holds every answer until N requests are in flight at once (at most 10 s), so a test
    can see concurrency without timing anything. The body's ``dimensions`` shortens the
    embeddings, as OpenAI's does.
    """

    def __init__(self, token: str = "test-key", dim: int = 8, *, model: str = "a",
                 port: int = 0, latency: float | Callable[[list[str]], float] = 0.0,
                 gate: int = 0):
        self.token, self.dim, self.model = token, dim, model
        self.latency, self.gate = latency, gate
        self.plan: list[str] = []
        self.requests = 0
        self.texts_served = 0
        self.in_flight = self.max_in_flight = 0
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        self.bodies: list[dict] = []
        self._lock = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    outer.requests += 1
                    outer.authorizations.append(self.headers.get("Authorization"))
                    outer.bodies.append(body)
                    action = outer.plan.pop(0) if outer.plan else "ok"
                if action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    return self._send(401, {"error": {"message": "Incorrect API key provided"}})
                if self.path.split("?")[0] != "/v1/embeddings":
                    return self._send(404, {"error": {"message": "no such route"}})
                if action == "429":
                    return self._send(429, {"error": {"message": "Rate limit reached"}},
                                      {"Retry-After": "0"})
                if action == "500":
                    return self._send(500, {"error": {"message": "internal"}})
                dim = body.get("dimensions") or outer.dim
                dim = dim + 1 if action == "dim" else dim
                texts = body["input"]
                outer._wait(texts)
                data = [{"object": "embedding", "index": i,
                         "embedding": fake_embedding(t, dim, outer.model)}
                        for i, t in enumerate(texts)]
                with outer._lock:
                    outer.texts_served += len(texts)
                self._send(200, {"object": "list", "data": data[::-1], "model": body["model"]})

            def _send(self, code, payload, headers=None):
                raw = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(raw)

        # HTTP/1.0 (one request per connection): a restart on the same port then truly
        # replaces the model, as killing a real server does (allow_reuse_address is set).
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _wait(self, texts: list[str]) -> None:
        """The answer's latency, and the gate: count this request in flight until both pass."""
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._lock.notify_all()
            if self.gate:
                self._lock.wait_for(lambda: self.max_in_flight >= self.gate, timeout=10)
        delay = self.latency(texts) if callable(self.latency) else self.latency
        if delay:
            time.sleep(delay)
        with self._lock:
            self.in_flight -= 1

    def __enter__(self) -> "FakeEmbeddings":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
