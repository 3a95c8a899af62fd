"""The HTTP API of `featstore serve` on Starlette: routes, tokens, request bodies, answers.

Every answer is JSON. A client's mistake is a 4xx with ``{"error": "what was
expected"}``, never a 500: bad JSON in any form (400), a body shorter than its
``Content-Length`` (408 once the read timeout passes, 400 if the client stops
sending), a chunked body or none (411), a body over the limit (413), too many headers
(431), an unknown method (501), paths outside the data folders (403). Requests that
are not HTTP at all are refused the same way by the server underneath
(:mod:`.http_server`). What each endpoint does is :mod:`.handlers`; how bodies are read
within the read timeout is :mod:`.bodies`; the OpenAPI schema (``GET /openapi.json``) is
built from the docstrings below (the YAML after ``---``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.endpoints import HTTPEndpoint
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from featstore import __version__
from featstore.workflows.service.bodies import drain, read_body
from featstore.workflows.service.config import MAX_HEAD_BYTES, MAX_HEADERS, ServiceConfig
from featstore.workflows.service.handlers import ENDPOINTS, Reply, ServiceAPI
from featstore.workflows.service.openapi import openapi_schema

log = logging.getLogger("featstore.workflows.service.server")

#: Methods the API knows; any other is refused with 501 (405 where a path lacks one).
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")


class JSONAnswer(Response):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return (json.dumps(content, default=str) + "\n").encode("utf-8")


def answer(status: int, payload: Any, headers: dict[str, str] | None = None, *,
           close: bool = False) -> JSONAnswer:
    extra = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", **(headers or {})}
    if close:
        extra["Connection"] = "close"
    return JSONAnswer(payload, status_code=status, headers=extra)


# -- answers to errors -------------------------------------------------------------------
async def on_reply(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Reply)
    if exc.drain:
        await drain(request)
    return answer(exc.status, {"error": exc.message}, exc.headers, close=exc.close)


async def on_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, a method the route lacks) in our words."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        reply = Reply(404, f"no such endpoint: {request.url.path}. Endpoints: {ENDPOINTS}")
    elif exc.status_code == 405:
        allowed = [m for m in (exc.headers or {}).get("Allow", "").split(", ") if m in METHODS]
        reply = Reply(405, f"{request.method} is not allowed here; use {' or '.join(allowed)}",
                      {"Allow": ", ".join(allowed)}, drain=True)
    else:
        reply = Reply(exc.status_code, str(exc.detail), dict(exc.headers or {}), drain=True)
    return await on_reply(request, reply)


async def on_error(request: Request, exc: Exception) -> Response:
    log.error("error answering %s %s", request.method, request.url.path, exc_info=exc)
    return answer(500, {"error": "internal error of the service; see its log"}, close=True)


# -- endpoints -----------------------------------------------------------------------------
def _api(request: Request, *, token: bool = True) -> ServiceAPI:
    api: ServiceAPI = request.app.state.api
    if token:
        request.state.token_name = api.authenticate(request.headers.get("authorization"))
    return api


class Health(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        """Liveness; needs no token.
        ---
        summary: Workers alive and job counts (no token needed)
        responses:
          200: {description: "{status, workers: {alive, configured}, jobs: {STATE: N}}"}
        """
        return answer(200, await run_in_threadpool(_api(request, token=False).health))


class OpenAPI(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        return answer(200, request.app.state.openapi)


class Jobs(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        """List jobs.
        ---
        summary: Jobs, oldest first (the newest 500 unless limit says otherwise)
        security: [{bearer: []}]
        parameters:
          - {name: state, in: query, schema: {type: string},
             description: "queued, running, done or failed; comma-separated or repeated"}
          - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100000}}
        responses:
          200: {description: "{jobs: [Job]}"}
          400: {description: an unknown state or a bad limit}
          401: {description: missing or unknown token}
        """
        api = _api(request)
        states = request.query_params.getlist("state")
        limit = (request.query_params.getlist("limit") or [None])[-1]
        return answer(200, await run_in_threadpool(api.list_jobs, states, limit))

    async def post(self, request: Request) -> Response:
        """Submit extract options.
        ---
        summary: One job per backbone x data set x split; equal jobs join, done ones are cached
        security: [{bearer: []}]
        requestBody:
          required: true
          content:
            application/json: {schema: {$ref: "#/components/schemas/JobRequest"}}
        responses:
          202: {description: "{jobs: [...]}: at least one job was queued"}
          200: {description: "{jobs: [...]}: every job joined a running one or was cached"}
          400: {description: bad JSON or options, or a body shorter than its Content-Length}
          401: {description: missing or unknown token}
          403: {description: a path outside the service's data folders}
          408: {description: the body did not arrive within the read timeout}
          411: {description: no Content-Length (or a chunked body)}
          413: {description: the body is larger than --max-request-bytes}
          429: {description: "too many active jobs for this token (Retry-After)"}
          503: {description: "the queue is full (Retry-After)"}
        """
        api = _api(request)
        body = await read_body(request)
        status, payload = await run_in_threadpool(api.submit, body, request.state.token_name)
        return answer(status, payload)


class Job(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        """One job.
        ---
        summary: A job's state, progress, attempts, worker, key, path and error
        security: [{bearer: []}]
        parameters: [{name: job_id, in: path, required: true, schema: {type: integer}}]
        responses:
          200: {content: {application/json: {schema: {$ref: "#/components/schemas/Job"}}},
                description: the job}
          401: {description: missing or unknown token}
          404: {description: no such job}
        """
        api = _api(request)
        return answer(200, await run_in_threadpool(api.job, request.path_params["job_id"]))


class JobLog(HTTPEndpoint):
    async def get(self, request: Request) -> Response:
        """One job's log.
        ---
        summary: What each attempt did (tracebacks show code, never data)
        security: [{bearer: []}]
        parameters: [{name: job_id, in: path, required: true, schema: {type: integer}}]
        responses:
          200: {description: "{id, log}"}
          401: {description: missing or unknown token}
          404: {description: no such job}
        """
        api = _api(request)
        return answer(200, await run_in_threadpool(api.job_log, request.path_params["job_id"]))


# -- the application -------------------------------------------------------------------
def _refusal(scope: Scope) -> Reply | None:
    """What is refused before routing, as http.server did: a request line or headers over
    the limits (414, 431; h11 refuses a head over them only while it is incomplete), and
    methods the API does not know (501)."""
    target = len(scope.get("raw_path") or scope["path"]) + len(scope["query_string"]) + 1
    head = target + sum(len(name) + len(value) + 4 for name, value in scope["headers"])
    if target > MAX_HEAD_BYTES:
        return Reply(414, "the request line is too long; send options in the body of POST /jobs",
                     drain=True)
    if len(scope["headers"]) > MAX_HEADERS or head > MAX_HEAD_BYTES:
        return Reply(431, "the request's headers are too long or too many; send a few short "
                          f"ones (at most {MAX_HEADERS}, {MAX_HEAD_BYTES} bytes in all)",
                     drain=True)
    if scope["method"] not in METHODS:
        return Reply(501, f"the method {scope['method']!r} is not supported; use GET or POST",
                     drain=True)
    return None


class Guard:
    """Around the app: early refusals, one path per resource (``/jobs/`` is ``/jobs``),
    one log line per request (its token's name, never a header), and no exception
    reaching the server (which would answer in plain text)."""

    def __init__(self, app: ASGIApp, read_timeout: float):
        self.app, self.read_timeout = app, read_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        scope["path"] = "/" + "/".join(p for p in scope["path"].split("/") if p)
        scope.setdefault("state", {})["read_timeout"] = self.read_timeout
        status: list[int] = []

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            reply = _refusal(scope)
            if reply is None:
                await self.app(scope, receive, send_logged)
            else:
                response = await on_reply(Request(scope, receive), reply)
                await response(scope, receive, send_logged)
        except Exception as exc:  # answered by on_error already, unless it never started
            if not status:
                response = await on_error(Request(scope, receive), exc)
                await response(scope, receive, send_logged)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info('%s %s "%s %s" %s', client[0], (scope.get("state") or {}).get(
                "token_name", "-"), scope["method"], scope["path"], status[0] if status else "-")


def create_app(api: ServiceAPI, cfg: ServiceConfig) -> Guard:
    """The ASGI application of one service."""
    routes = [Route("/health", Health), Route("/openapi.json", OpenAPI, include_in_schema=False),
              Route("/jobs", Jobs), Route("/jobs/{job_id}", Job),
              Route("/jobs/{job_id}/log", JobLog)]
    app = Starlette(routes=routes, exception_handlers={
        Reply: on_reply, HTTPException: on_http_exception, Exception: on_error})
    app.state.api = api
    app.state.max_request_bytes = cfg.max_request_bytes
    app.state.openapi = openapi_schema(routes, cfg.limits, __version__)
    return Guard(app, cfg.read_timeout)
