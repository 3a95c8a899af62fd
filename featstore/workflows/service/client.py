"""Client of the extraction service: submit jobs, wait for them, list them, read logs.

``requests`` only (no torch), so `featstore submit` and `featstore jobs` start at
once. An answer of 429 or 5xx (a busy service, a restarting proxy) is retried a few
times, waiting as its Retry-After says (:mod:`featstore.utils.retries`). Every failure
is a :class:`featstore.errors.FeatstoreError` with a message that says what to do:

>>> from featstore.workflows.service.client import submit
>>> jobs = submit("http://127.0.0.1:8765", {"backbones": ["efficientnet-lite0"],
...               "datasets": ["mnist-5k"], "splits": ["train", "test"]},
...               token=os.environ["FEATSTORE_TOKEN"], wait=True)     # doctest: +SKIP
>>> [(j["key"], j["path"]) for j in jobs]                               # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit

import requests

from featstore.errors import ConfigError
from featstore.utils.retries import causes, session_with_retries
from featstore.workflows.service.addresses import is_loopback
from featstore.workflows.service.errors import (AuthenticationError, JobFailedError,
                                                ServiceBusyError, ServiceError,
                                                ServiceUnavailableError)

ENV_TOKEN = "FEATSTORE_TOKEN"
ENV_SERVER = "FEATSTORE_SERVER"
#: Options the service decides itself; :func:`prepare_options` leaves them out.
SERVER_SIDE = ("root", "device", "progress", "lease_seconds")
#: Seconds one HTTP request may take.
TIMEOUT = 30.0
#: Answers retried, and how often: a busy service (429, 503) or a proxy in front of one
#: that restarts (502, 504). Submitting again is safe: equal jobs join (request keys).
RETRY_STATUS = (429, 500, 502, 503, 504)
RETRIES = 2
#: A Retry-After longer than this is not waited for: the error says to retry later.
MAX_RETRY_AFTER = 10.0
#: While waiting, the service may be unreachable this long (a restart) before giving up.
UNREACHABLE_GRACE = 30.0
START_HINT = "featstore serve --root ROOT --tokens-file tokens.txt"


def server_url(server: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The service's base URL: ``server``, else ``$FEATSTORE_SERVER``; ``http://`` is added
    when no scheme is given."""
    environ = os.environ if environ is None else environ
    server = (server or environ.get(ENV_SERVER) or "").strip()
    if not server:
        raise ConfigError(f"No service given: pass --server URL (e.g. http://127.0.0.1:8765) or "
                          f"set {ENV_SERVER}. Start a service with `{START_HINT}`.")
    if "://" not in server:
        server = "http://" + server
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"The service URL must look like http://HOST:PORT. Got {server!r}.")
    return server.rstrip("/")


def read_token(token_file: str | Path | None = None,
               environ: Mapping[str, str] | None = None) -> str | None:
    """The client's token: the first line of ``token_file``, else ``$FEATSTORE_TOKEN``."""
    environ = os.environ if environ is None else environ
    if token_file:
        path = Path(token_file).expanduser()
        try:
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
        except OSError as err:
            raise ConfigError(f"Cannot read the token file {path}: {err.strerror or err}.") from err
        token = next((ln for ln in lines if ln and not ln.startswith("#")), "")
        if not token:
            raise ConfigError(f"The token file {path} is empty; put the token on its first line.")
        return token
    return environ.get(ENV_TOKEN) or None


def prepare_options(options: Mapping[str, Any], cwd: Path | None = None) -> dict[str, Any]:
    """Extract options as the service takes them: no unset values, none of the options
    it decides itself (root, device, progress, lease_seconds), and local paths of data
    sets and weights made absolute (the service reads them from its own machine)."""
    cwd = cwd or Path.cwd()
    out: dict[str, Any] = {}
    for name, value in options.items():
        key = str(name).replace("-", "_")
        if key in SERVER_SIDE or value is None or value == [] or value == ():
            continue
        if isinstance(value, tuple):
            value = list(value)
        if key in ("dataset", "datasets"):
            value = [_absolute(v, cwd) for v in ([value] if isinstance(value, str) else value)]
        elif key == "weights":
            value = _absolute(value, cwd)
        out[key] = value
    return out


def _absolute(spec: Any, cwd: Path) -> Any:
    if not isinstance(spec, str):
        return spec
    path = Path(spec).expanduser()
    path = path if path.is_absolute() else cwd / path
    return str(path.resolve()) if path.exists() else spec


# -- the API ---------------------------------------------------------------------------
def submit(server: str, options: Mapping[str, Any], *, token: str | None, wait: bool = False,
           poll: float = 1.0, timeout: float | None = None,
           on_update: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Submit extract ``options`` (as for `featstore extract`; see :func:`prepare_options`)
    and return one dict per (backbone, data set, split) job.

    Each dict has ``id``, ``status`` (``queued``, ``joined``: an equal job was already
    queued or running, or ``cached``: it is already done), ``state``, ``backbone``,
    ``dataset``, ``split``, and ``key``/``path`` once known. With ``wait=True`` it polls
    every ``poll`` seconds until every job is done (``state`` ``done``, ``key`` and
    ``path`` set), calling ``on_update`` with each job that finishes; if any failed it
    raises :class:`JobFailedError` (its ``jobs`` attribute holds them all).

    Raises :class:`ServiceUnavailableError` (not running), :class:`AuthenticationError`
    (401), :class:`ConfigError` (400: bad options), :class:`ServiceBusyError` (429/503).
    """
    base = server_url(server)
    _, answer = request("POST", base, "/jobs", token=token, body=prepare_options(options))
    jobs = list(answer.get("jobs", []))
    for job in jobs:
        if job.get("status") == "cached":
            job["state"] = "done"
    if not wait:
        return jobs
    return wait_for(base, jobs, token=token, poll=poll, timeout=timeout, on_update=on_update)


def wait_for(server: str, jobs: list[dict[str, Any]], *, token: str | None, poll: float = 1.0,
             timeout: float | None = None,
             on_update: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Poll until every job in ``jobs`` (dicts with an ``id``) is done or failed; return
    each job's full view (as ``GET /jobs/ID``: ``key``, ``path``, ``result``, ``error``,
    ...) with the ``status`` it was submitted with."""
    base = server_url(server)
    final: dict[int, dict[str, Any]] = {}
    start, unreachable_since = time.monotonic(), None
    pending = list(dict.fromkeys(j["id"] for j in jobs))  # cached ones too: their full view
    while pending:
        try:
            for job_id in list(pending):
                now = get_job(base, job_id, token=token)
                if now["state"] in ("done", "failed"):
                    status = next(j.get("status", "queued") for j in jobs if j["id"] == job_id)
                    final[job_id] = {**now, "status": status}
                    pending.remove(job_id)
                    if on_update:
                        on_update(final[job_id])
            unreachable_since = None
        except ServiceUnavailableError:
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > UNREACHABLE_GRACE:
                raise
        if not pending:
            break
        if timeout is not None and time.monotonic() - start > timeout:
            raise ServiceError(f"Gave up waiting after {timeout:.0f} s; job(s) "
                               f"{', '.join(map(str, pending))} are still queued or running. "
                               f"Follow them with `featstore jobs --server {base}`.")
        time.sleep(poll)
    out = [final[j["id"]] for j in jobs]
    failed = [j for j in out if j["state"] == "failed"]
    if failed:
        lines = [f"job {j['id']} ({j['backbone']} {j['dataset']}/{j['split']}) failed after "
                 f"{j.get('attempts')} attempt(s): {j.get('error')}" for j in failed]
        raise JobFailedError(
            f"{len(failed)} of {len(out)} job(s) failed:\n  " + "\n  ".join(lines)
            + f"\nSee a job's log with `featstore jobs --server {base} --log ID`.", out)
    return out


def list_jobs(server: str, *, token: str | None, states: list[str] | None = None,
              limit: int | None = None) -> list[dict[str, Any]]:
    """Jobs of the service, oldest first (the newest ``limit``, 500 by default)."""
    query = []
    if states:
        query.append("state=" + quote(",".join(states)))
    if limit:
        query.append(f"limit={int(limit)}")
    path = "/jobs" + ("?" + "&".join(query) if query else "")
    return request("GET", server_url(server), path, token=token)[1]["jobs"]


def get_job(server: str, job_id: int, *, token: str | None) -> dict[str, Any]:
    """One job's state, progress, attempts, worker, key, path and error."""
    return request("GET", server_url(server), f"/jobs/{int(job_id)}", token=token)[1]


def job_log(server: str, job_id: int, *, token: str | None) -> str:
    """The text of one job's log."""
    return request("GET", server_url(server), f"/jobs/{int(job_id)}/log", token=token)[1]["log"]


def health(server: str) -> dict[str, Any]:
    """The service's ``/health`` answer (needs no token)."""
    return request("GET", server_url(server), "/health")[1]


# -- HTTP ------------------------------------------------------------------------------
class _Bearer(requests.auth.AuthBase):
    """``Authorization: Bearer TOKEN`` (and never credentials from ~/.netrc)."""

    def __init__(self, token: str | None):
        self.token = token

    def __call__(self, r: Any) -> Any:
        r.headers.pop("Authorization", None)
        if self.token:
            r.headers["Authorization"] = f"Bearer {self.token}"
        return r


def request(method: str, base: str, path: str, *, token: str | None = None,
            body: Any = None, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One JSON request (retried on 429 and 5xx, see :data:`RETRIES`); HTTP and network
    errors become featstore errors."""
    with session_with_retries(RETRIES, status=RETRY_STATUS, connect=0, read=0, other=0,
                              max_wait=MAX_RETRY_AFTER) as session:
        # No proxy from the environment for a service on this machine: it would not
        # reach 127.0.0.1.
        session.trust_env = not is_loopback(urlsplit(base).hostname or "")
        try:
            resp = session.request(method, base + path, json=body, auth=_Bearer(token),
                                   headers={"Accept": "application/json"}, timeout=timeout)
        except requests.Timeout:
            raise ServiceUnavailableError(f"The featstore service at {base} did not answer "
                                          f"within {timeout:.0f} s.") from None
        except requests.ConnectionError as err:
            if _refused(err):
                raise ServiceUnavailableError(
                    f"No featstore service is running at {base} (connection refused). Start "
                    f"one with `{START_HINT}`, or point --server (or ${ENV_SERVER}) at where "
                    "it runs.") from None
            raise ServiceUnavailableError(
                f"Cannot reach the featstore service at {base}, or the connection broke: "
                f"{_reason(err)}. Check the address and that the service runs; retry if it "
                "persists.") from None
        except requests.RequestException as err:
            raise ServiceUnavailableError(f"The connection to the featstore service at {base} "
                                          f"broke: {_reason(err)}. Retry; if it persists, "
                                          "check the service's output.") from None
    if resp.status_code >= 400:
        raise _http_error(base, resp.status_code, resp.content)
    try:
        return resp.status_code, json.loads(resp.content.decode("utf-8") or "null")
    except ValueError as err:
        raise ServiceError(f"{base} answered with something that is not JSON ({err}); is it a "
                           "featstore service?") from None


def _refused(err: BaseException) -> bool:
    return any(isinstance(e, ConnectionRefusedError) for e in causes(err))


def _reason(err: BaseException) -> str:
    """The innermost error's description (not requests' long wrapper)."""
    inner = causes(err)[-1]
    return f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__


def _http_error(base: str, status: int, raw: bytes) -> Exception:
    try:
        message = json.loads(raw.decode("utf-8")).get("error") or ""
    except (ValueError, AttributeError, UnicodeDecodeError):
        message = raw.decode("utf-8", "replace").strip()[:300]
    if status == 401:
        return AuthenticationError(
            f"The service at {base} refused the request: {message}. Set {ENV_TOKEN} to your "
            "token (one from the server's tokens file), or pass --token-file FILE.", status)
    if status in (400, 403):
        return ConfigError(f"The service at {base} refused the job: {message}")
    if status in (429, 503):
        return ServiceBusyError(f"The service at {base} is busy: {message}.", status)
    if status == 413:
        return ServiceError(f"The service at {base} refused the request: {message}.", status)
    return ServiceError(f"The service at {base} answered {status}: {message}", status)
