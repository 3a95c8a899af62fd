"""Request bodies of the service's API: read exactly, or drained before an error answer.

Every piece of a body must arrive within the service's read timeout
(``serve --read-timeout``, kept in the request's state), so a stalled client or a body
shorter than its ``Content-Length`` cannot hold the server: 408 once the timeout
passes, 400 if the client stops sending. A body that is refused unread is read and
dropped first (bounded), so that the client reads the answer instead of a reset
connection.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.types import Message

from featstore.workflows.service.handlers import Reply

#: At most this many bytes of a refused body are read (and dropped) before answering.
DRAIN_LIMIT = 8 << 20


async def _next(request: Request) -> Message:
    """The next piece of the body, waiting at most the service's read timeout."""
    return await asyncio.wait_for(request.receive(), request.state.read_timeout)


async def read_body(request: Request) -> bytes:
    """Exactly ``Content-Length`` bytes, each piece within the read timeout. (The server
    has already refused a Content-Length that is not one non-negative integer, and
    frames the body by it: no more bytes than announced arrive.)"""
    limit = request.app.state.max_request_bytes
    if "transfer-encoding" in request.headers:
        raise Reply(411, "send the body with a Content-Length header (chunked transfer "
                         "encoding is not accepted)", drain=True)
    if "content-length" not in request.headers:
        raise Reply(411, "a Content-Length header with the body's size in bytes is required",
                    drain=True)
    n = int(request.headers["content-length"])
    if n > limit:
        raise Reply(413, f"request body of {n} bytes is larger than the service's limit of "
                         f"{limit} bytes (--max-request-bytes); send fewer options per "
                         "request", drain=True)
    body = bytearray()
    more = True
    while more:
        try:
            message = await _next(request)
        except asyncio.TimeoutError:  # TimeoutError from Python 3.11 on
            raise Reply(408, f"the request body did not arrive: Content-Length announced {n} "
                             f"bytes and none came for {request.state.read_timeout:g} s",
                        close=True) from None
        if message["type"] != "http.request":  # the client went away
            raise Reply(400, "the connection closed before the body arrived", close=True)
        body += message.get("body", b"")
        more = message.get("more_body", False)
    request.state.body_read = True
    if len(body) < n:  # the client stopped sending (half-closed its end)
        raise Reply(400, f"the request body ended after {len(body)} of the {n} bytes its "
                         "Content-Length announced", close=True)
    return bytes(body)


async def drain(request: Request) -> None:
    """Read and drop what is left of the body (at most :data:`DRAIN_LIMIT` bytes, each
    piece within the read timeout)."""
    if getattr(request.state, "body_read", False):
        return
    request.state.body_read = True
    left = DRAIN_LIMIT
    while left > 0:
        try:
            message = await _next(request)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        left -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return
