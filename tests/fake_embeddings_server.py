"""A real OpenAI-compatible embeddings server on 127.0.0.1, scriptable for failures."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np


def fake_embedding(text: str, dim: int) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).normal(size=dim).round(6).tolist()


class FakeEmbeddings:
    """``with FakeEmbeddings(token="k") as srv: srv.url``; script failures with ``srv.plan``.

    ``plan`` is a list consumed one entry per request: ``"429"`` (with Retry-After: 0),
    ``"500"``, ``"drop"`` (close the socket without answering), ``"dim"`` (wrong
    dimension), or ``"ok"``. An empty plan answers normally.
    """

    def __init__(self, token: str = "test-key", dim: int = 8):
        self.token, self.dim = token, dim
        self.plan: list[str] = []
        self.requests = 0
        self.texts_served = 0
        self.authorizations: list[str | None] = []  # the Authorization header of each request
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                outer.requests += 1
                outer.authorizations.append(self.headers.get("Authorization"))
                action = outer.plan.pop(0) if outer.plan else "ok"
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
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
                dim = outer.dim + 1 if action == "dim" else outer.dim
                texts = body["input"]
                outer.texts_served += len(texts)
                data = [{"object": "embedding", "index": i, "embedding": fake_embedding(t, dim)}
                        for i, t in enumerate(texts)]
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

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> "FakeEmbeddings":
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
