"""The server under the API: uvicorn (its h11 protocol) on one socket, in a thread of
`featstore serve`, so that the main thread can watch the workers.

uvicorn's h11 protocol, with three changes for this service (:class:`Protocol`):

* a request that is not HTTP/1.1 as h11 parses it (a request line over the limit,
  headers over it, a malformed request line, Content-Length or header, a missing Host)
  gets a JSON 4xx that says what is expected, like every other answer, instead of a
  plain-text 400 (414 for a long request line, 431 for long headers);
* a client that half-closes its end (``shutdown(SHUT_WR)``) after its request, or in
  the middle of its body, still gets an answer (asyncio would close at once);
* a connection must send its request head within the read timeout, as each later read
  of its body must (uvicorn itself times out idle keep-alive connections only).

Proxy headers are ignored (``X-Forwarded-For`` is not trusted from anyone) and the
socket is bound to the one address given (127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import sys
import threading
import time
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from featstore.errors import ConfigError
from featstore.workflows.service.config import MAX_HEAD_BYTES

log = logging.getLogger("featstore.workflows.service.server")

#: Listen backlog: bursts of clients (100 at once) must not be reset by the kernel.
BACKLOG = 256
#: Characters of h11's own description of a malformed request that an answer quotes.
MAX_DETAIL = 100
EXPECTED = ("expected a request line 'METHOD /path HTTP/1.1' (an HTTP/1.x version, a path of "
            "ASCII characters: percent-encode others), one Host header, header lines "
            "'Name: value', and at most one Content-Length: one non-negative integer, the "
            "body's size in bytes")


def refusal(err: BaseException | None, received: bytes) -> tuple[int, str]:
    """(status, message) for a request h11 refused: its status hint (431 for a head over
    the limit, 501 for an unknown transfer coding, else 400) and what is expected."""
    status = getattr(err, "error_status_hint", 400)
    if status == 431 and b"\n" not in received:
        return 414, "the request line is too long; send options in the body of POST /jobs"
    if status == 431:
        return 431, "the request's headers are too long or too many; send a few short ones"
    detail = str(err or "malformed")[:MAX_DETAIL]
    return status, f"the request is not well-formed HTTP/1.1 ({detail}): {EXPECTED}"


class Protocol(H11Protocol):
    """uvicorn's h11 protocol with the service's refusals, half-closed clients answered,
    and a read timeout for request heads (see the module's docstring)."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._await_head()  # a head that is still incomplete: its next bytes in time

    def _await_head(self) -> None:
        self._unset_keepalive_if_required()
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                            self.timeout_keep_alive_handler)

    def eof_received(self) -> bool | None:
        """The client will send nothing more: a request in progress is answered (its
        body ends here), then the connection closes."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return None  # nothing to answer: close
        cycle.keep_alive = False
        if cycle.more_body:
            cycle.more_body = False
            cycle.message_event.set()
        return True

    def send_400_response(self, msg: str) -> None:
        """h11 refused what the client sent (called while its RemoteProtocolError is
        being handled)."""
        err = sys.exc_info()[1]
        if self.conn.our_state is not h11.IDLE:  # in a body: the app answers, if it can
            cycle = self.cycle
            if cycle is not None and not cycle.response_started:
                self.eof_received()
            else:
                self.transport.close()
            return
        received, _ = self.conn.trailing_data
        status, message = refusal(err, received)
        body = (json.dumps({"error": message}) + "\n").encode()
        headers = [(b"content-type", b"application/json; charset=utf-8"),
                   (b"content-length", str(len(body)).encode()), (b"connection", b"close"),
                   (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
                   *self.server_state.default_headers]
        try:
            for event in (h11.Response(status_code=status, headers=headers,
                                       reason=STATUS_PHRASES[status]),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # cannot answer on this connection any more
            pass
        self.transport.close()
        client = self.client[0] if self.client else "-"
        log.info("%s - refused a malformed request: %d (%s)", client, status, err)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: any free one), or a ConfigError."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ConfigError(f"Port {port} on {host} is in use (another service?). "
                              "Choose another with --port.") from err
        raise ConfigError(f"Cannot listen on {host}:{port}: {err}.") from err
    return sock


class HTTPServer:
    """uvicorn serving an ASGI app on ``host:port``, in a thread."""

    def __init__(self, app: Any, host: str, port: int, *, read_timeout: float):
        self.sock = bind(host, port)
        config = uvicorn.Config(
            app, http=Protocol, ws="none", lifespan="off", interface="asgi3", loop="asyncio",
            log_config=None, log_level="error", access_log=False,  # the app logs requests
            proxy_headers=False, server_header=False,
            headers=[("server", "featstore-service")], backlog=BACKLOG,
            timeout_keep_alive=read_timeout, h11_max_incomplete_event_size=MAX_HEAD_BYTES,
            timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self, timeout: float = 60.0) -> None:
        """Serve in a thread; return once the server accepts connections."""
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="http", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"The HTTP server did not start on {self.address[0]}:"
                                  f"{self.address[1]}; see the messages above.")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop accepting, let answers in progress finish (a few seconds at most)."""
        if self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)
            self.thread = None
        self.sock.close()
