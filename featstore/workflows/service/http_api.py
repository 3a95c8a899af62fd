"""The HTTP side of `featstore serve`: one handler per request, JSON in and out.

A client's mistake is always a 4xx answer with ``{"error": "what was expected"}``, never
a 500: bad JSON in any form, a body shorter than its ``Content-Length`` (408 once the
read timeout passes, 400 if the client stops sending), a chunked body or none (411),
oversized request lines or headers (414, 431), an unknown method (501), paths outside
the data folders (403). Every read of a request waits at most the service's
``read_timeout``.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from featstore.errors import ConfigError
from featstore.workflows.service.errors import ServiceBusyError
from featstore.workflows.service.queue import STATES

if TYPE_CHECKING:
    from featstore.workflows.service.server import Service

log = logging.getLogger("featstore.workflows.service.server")

#: At most this many bytes of a refused body are read (and discarded) so that the
#: client sees the answer instead of a reset connection.
DRAIN_LIMIT = 8 << 20
#: Digits a Content-Length may have (a larger body is refused by the size limit anyway).
MAX_LENGTH_DIGITS = 18


class HTTPServer(ThreadingHTTPServer):
    """A thread per connection; a listen backlog for bursts of clients (the default of 5
    makes the kernel reset connections when 100 clients connect at once)."""

    request_queue_size = 256
    daemon_threads = True


class _Reply(Exception):
    """An error answer: status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


UNAUTHORIZED = ("missing or unknown token: send 'Authorization: Bearer TOKEN' with a token from "
                "the server's tokens file (clients read it from $FEATSTORE_TOKEN)")


class Handler(BaseHTTPRequestHandler):
    """One request; the JSON API of :class:`Service`."""

    server_version = "featstore-service"
    sys_version = ""
    token_name: str | None = None

    @property
    def service(self) -> "Service":
        return self.server.service  # type: ignore[attr-defined]

    def setup(self) -> None:
        # Every read of the socket (request line, headers, body) waits at most this long:
        # a stalled client or a body shorter than its Content-Length cannot hold a thread.
        self.timeout = self.service.cfg.read_timeout
        super().setup()

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        try:
            url = urlsplit(self.path)
            parts = [p for p in url.path.split("/") if p]
            query = parse_qs(url.query)
            if parts == ["health"]:
                self._allow(method, "GET")
                return self._send(200, self.service.health())
            if not parts or parts[0] != "jobs" or len(parts) > 3 \
                    or (len(parts) == 3 and parts[2] != "log"):
                raise _Reply(404, f"no such endpoint: {url.path}. Endpoints: GET /health, "
                                  "POST /jobs, GET /jobs, GET /jobs/ID, GET /jobs/ID/log")
            self._allow(method, *(("GET", "POST") if len(parts) == 1 else ("GET",)))
            self._authenticate()
            if len(parts) == 1:
                return self._submit() if method == "POST" else self._list(query)
            job_id = self._job_id(parts[1])
            if len(parts) == 2:
                return self._send(200, self._job(job_id))
            return self._log(job_id)
        except _Reply as reply:
            self._send(reply.status, {"error": reply.message}, reply.headers)
            self._discard_unread()
        except (ConnectionError, BrokenPipeError):
            self.close_connection = True  # the client went away
        except Exception:
            log.exception("error answering %s %s", method, self.path)
            self._send(500, {"error": "internal error of the service; see its log"})

    # -- steps -------------------------------------------------------------------------
    def _allow(self, method: str, *allowed: str) -> None:
        if method not in allowed:
            self._drain()
            raise _Reply(405, f"{method} is not allowed here; use {' or '.join(allowed)}",
                         {"Allow": ", ".join(allowed)})

    def _authenticate(self) -> None:
        self.token_name = self.service.cfg.tokens.identify(self.headers.get("Authorization"))
        if self.token_name is None:
            self._drain()
            raise _Reply(401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="featstore"'})

    def _body(self) -> bytes:
        """The body: exactly Content-Length bytes, each block within the read timeout."""
        limit = self.service.cfg.max_request_bytes
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise _Reply(411, "send the body with a Content-Length header (chunked transfer "
                              "encoding is not accepted)")
        lengths = [v.strip() for v in self.headers.get_all("Content-Length") or []]
        if not lengths:
            self.close_connection = True
            raise _Reply(411, "a Content-Length header with the body's size in bytes is required")
        if len(set(lengths)) > 1 or not (lengths[0].isascii() and lengths[0].isdigit()) \
                or len(lengths[0]) > MAX_LENGTH_DIGITS:
            self.close_connection = True
            raise _Reply(400, "Content-Length must be one non-negative integer: the body's size "
                              "in bytes")
        n = int(lengths[0])
        if n > limit:
            self._drain()
            raise _Reply(413, f"request body of {n} bytes is larger than the service's limit of "
                              f"{limit} bytes (--max-request-bytes); send fewer options per "
                              "request")
        try:
            body = self.rfile.read(n)
        except TimeoutError:
            self.close_connection = True
            raise _Reply(408, f"the request body did not arrive: Content-Length announced {n} "
                              f"bytes and none came for {self.timeout:g} s") from None
        if len(body) < n:
            self.close_connection = True
            raise _Reply(400, f"the request body ended after {len(body)} of the {n} bytes its "
                              "Content-Length announced")
        return body

    def _drain(self) -> None:
        """Read and drop an unread body (bounded), then close the connection."""
        self.close_connection = True
        try:
            text = (self.headers.get("Content-Length") or "0").strip()[:MAX_LENGTH_DIGITS]
            left = min(int(text), DRAIN_LIMIT)
            while left > 0:
                block = self.rfile.read(min(left, 1 << 16))
                if not block:
                    break
                left -= len(block)
        except (OSError, ValueError):
            pass

    def _submit(self) -> None:
        body = self._body()
        try:
            status, payload = self.service.submit(body, self.token_name or "")
        except ConfigError as err:  # PathNotAllowedError: 403
            raise _Reply(getattr(err, "status", 400), str(err)) from err
        except ServiceBusyError as err:
            retry = "5" if err.status == 503 else "30"
            raise _Reply(err.status or 503, str(err), {"Retry-After": retry}) from err
        self._send(status, payload)

    def _list(self, query: dict[str, list[str]]) -> None:
        states = [s.strip() for v in query.get("state", []) for s in v.split(",") if s.strip()]
        unknown = sorted(set(states) - set(STATES))
        if unknown:
            raise _Reply(400, f"unknown state(s) {unknown}; expected some of {', '.join(STATES)}")
        try:
            limit = int(query.get("limit", ["500"])[-1])
        except ValueError:
            limit = -1
        if not 1 <= limit <= 100000:
            raise _Reply(400, "limit must be an integer in [1, 100000]")
        self._send(200, {"jobs": self.service.queue.list(states or None, limit)})

    def _job_id(self, text: str) -> int:
        if not (text.isascii() and text.isdigit()) or len(text) > MAX_LENGTH_DIGITS:
            raise _Reply(404, f"no job {text[:40]!r}: job ids are integers")
        return int(text)

    def _job(self, job_id: int) -> dict[str, Any]:
        job = self.service.queue.get(job_id)
        if job is None:
            raise _Reply(404, f"no job {job_id} in this service's queue")
        return job

    def _log(self, job_id: int) -> None:
        self._job(job_id)
        path = self.service.queue.log_path(job_id)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            text = ""
        self._send(200, {"id": job_id, "log": text})

    # -- output ------------------------------------------------------------------------
    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """http.server's own refusals (request line or headers too long or malformed, an
        unsupported method) as JSON like every other answer, and the connection closed."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable version: answer with headers
            self.request_version = "HTTP/1.0"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        hints = {414: "the request line is too long; send options in the body of POST /jobs",
                 431: "the request's headers are too long or too many; send a few short ones",
                 501: f"the method {self.command!r} is not supported; use GET or POST"}
        self._send(code, {"error": hints.get(code) or f"{phrase}: {message or explain or ''}"
                          .rstrip(": ")})
        self._discard_unread()

    def _discard_unread(self, limit: int = 1 << 20, wait: float = 0.2) -> None:
        """After an error answer on a connection about to close: read what the client
        still sends (bounded), so that closing does not reset the connection before the
        client has read the answer."""
        if not self.close_connection:
            return
        try:
            self.connection.settimeout(wait)
            while limit > 0:
                block = self.rfile.read1(min(limit, 1 << 16))
                if not block:
                    break
                limit -= len(block)
        except (OSError, ValueError):
            pass

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(payload, default=str) + "\n").encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except (ConnectionError, OSError):
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
        # The request line and status only: headers (and so tokens) are never logged.
        log.info("%s %s %s", self.address_string(), self.token_name or "-", format % args)
