"""What the service answers, apart from HTTP: who is asking, jobs submitted, listed and
read. Each method returns a JSON-able answer or raises :class:`Reply` with the status
and a message that says what was expected; :mod:`.app` turns both into responses.

Methods here block (SQLite, the file system), so the app calls them in worker threads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from featstore.errors import ConfigError
from featstore.workflows.service.config import ServiceConfig
from featstore.workflows.service.errors import ServiceBusyError
from featstore.workflows.service.queue import STATES, JobQueue
from featstore.workflows.service.requests import DataDirs, expand, parse_body

#: Digits a job id or a Content-Length may have.
MAX_DIGITS = 18
UNAUTHORIZED = ("missing or unknown token: send 'Authorization: Bearer TOKEN' with a token from "
                "the server's tokens file (clients read it from $FEATSTORE_TOKEN)")
ENDPOINTS = ("GET /health, GET /openapi.json, POST /jobs, GET /jobs, GET /jobs/ID, "
             "GET /jobs/ID/log")


class Reply(Exception):
    """An error answer: its status, message and extra headers.

    ``drain``: the body was not read; read what is left of it (bounded) before
    answering, so that the client reads the answer instead of a reset connection, then
    close. ``close``: close the connection after the answer (the body is in an unknown
    state).
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *,
                 drain: bool = False, close: bool = False):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}
        self.drain, self.close = drain, close or drain


def store_complete(path: str) -> bool:
    """True if a complete feature set is at ``path`` (any error: not usable, so False)."""
    from featstore.store import open_store

    try:
        with open_store(path):
            return True
    except Exception:
        return False


class ServiceAPI:
    """The answers of one service: its settings, queue and data folders."""

    def __init__(self, cfg: ServiceConfig, root: str, queue: JobQueue, data_dirs: DataDirs,
                 cwd: Path, workers_alive: Callable[[], int]):
        self.cfg, self.root, self.queue, self.data_dirs, self.cwd = cfg, root, queue, data_dirs, cwd
        self.workers_alive = workers_alive

    def authenticate(self, authorization: str | None) -> str:
        """The name of the request's token, or a 401."""
        name = self.cfg.tokens.identify(authorization)
        if name is None:
            raise Reply(401, UNAUTHORIZED, {"WWW-Authenticate": 'Bearer realm="featstore"'},
                        drain=True)
        return name

    def health(self) -> dict[str, Any]:
        return {"status": "ok",
                "workers": {"alive": self.workers_alive(), "configured": len(self.cfg.devices)},
                "jobs": self.queue.counts()}

    def submit(self, body: bytes, token_name: str) -> tuple[int, dict[str, Any]]:
        """202 if a job was queued, else 200 (every job joined or cached)."""
        try:
            requests = expand(parse_body(body), self.root, cwd=self.cwd,
                              allow_plugins=self.cfg.allow_plugins,
                              max_jobs=self.cfg.max_jobs_per_request, data_dirs=self.data_dirs,
                              limits=self.cfg.limits)
            answers = self.queue.submit(requests, submitted_by=token_name,
                                        max_attempts=self.cfg.max_attempts,
                                        max_queue=self.cfg.max_queue,
                                        max_per_token=self.cfg.max_per_token,
                                        is_complete=store_complete)
        except ConfigError as err:  # PathNotAllowedError: 403
            raise Reply(getattr(err, "status", 400), str(err)) from err
        except ServiceBusyError as err:
            retry = "5" if err.status == 503 else "30"
            raise Reply(err.status or 503, str(err), {"Retry-After": retry}) from err
        return (202 if any(a["status"] == "queued" for a in answers) else 200), {"jobs": answers}

    def list_jobs(self, states: list[str], limit: str | None) -> dict[str, Any]:
        wanted = [s.strip() for v in states for s in v.split(",") if s.strip()]
        unknown = sorted(set(wanted) - set(STATES))
        if unknown:
            raise Reply(400, f"unknown state(s) {unknown}; expected some of {', '.join(STATES)}")
        try:
            n = int(limit if limit is not None else "500")
        except ValueError:
            n = -1
        if not 1 <= n <= 100000:
            raise Reply(400, "limit must be an integer in [1, 100000]")
        return {"jobs": self.queue.list(wanted or None, n)}

    def job(self, text: str) -> dict[str, Any]:
        job_id = self._job_id(text)
        job = self.queue.get(job_id)
        if job is None:
            raise Reply(404, f"no job {job_id} in this service's queue")
        return job

    def job_log(self, text: str) -> dict[str, Any]:
        job_id = self.job(text)["id"]
        try:
            log = self.queue.log_path(job_id).read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            log = ""
        return {"id": job_id, "log": log}

    @staticmethod
    def _job_id(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS:
            raise Reply(404, f"no job {text[:40]!r}: job ids are integers")
        return int(text)
