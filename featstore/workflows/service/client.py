"""Client of the extraction service: submit jobs, wait for them, list them, read logs.

Standard library only (no torch), so `featstore submit` and `featstore jobs` start at
once. Every failure is a :class:`featstore.errors.FeatstoreError` with a message that
says what to do:

>>> from featstore.workflows.service.client import submit
>>> jobs = submit("http://127.0.0.1:8765", {"backbones": ["efficientnet-lite0"],
...               "datasets": ["mnist-5k"], "splits": ["train", "test"]},
...               token=os.environ["FEATSTORE_TOKEN"], wait=True)     # doctest: +SKIP
>>> [(j["key"], j["path"]) for j in jobs]                               # doctest: +SKIP
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import quote, urlsplit

from featstore.errors import ConfigError
from featstore.workflows.service.errors import (AuthenticationError, JobFailedError, ServiceBusyError, ServiceError,
                     ServiceUnavailableError)

ENV_TOKEN = "FEATSTORE_TOKEN"
ENV_SERVER = "FEATSTORE_SERVER"
#: Options the service decides itself; :func:`prepare_options` leaves them out.
SERVER_SIDE = ("root", "device", "progress", "lease_seconds")
#: Seconds one HTTP request may take.
TIMEOUT = 30.0
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
def request(method: str, base: str, path: str, *, token: str | None = None,
            body: Any = None, timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One JSON request; HTTP and network errors become featstore errors."""
    data = None if body is None else json.dumps(body).encode("utf-8")
    headers = {"Accept": "application/json"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with _opener(base).open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read().decode("utf-8") or "null")
    except urllib.error.HTTPError as err:
        with err:
            raise _http_error(base, err.code, err.read()) from None
    except urllib.error.URLError as err:
        reason = err.reason
        if isinstance(reason, ConnectionRefusedError):
            raise ServiceUnavailableError(
                f"No featstore service is running at {base} (connection refused). Start one "
                f"with `{START_HINT}`, or point --server (or ${ENV_SERVER}) at where it "
                "runs.") from None
        raise ServiceUnavailableError(f"Cannot reach the featstore service at {base}: {reason}. "
                                      "Check the address and that the service runs.") from None
    except (TimeoutError, socket.timeout):
        raise ServiceUnavailableError(f"The featstore service at {base} did not answer within "
                                      f"{timeout:.0f} s.") from None
    except (ConnectionError, http.client.HTTPException) as err:
        raise ServiceUnavailableError(f"The connection to the featstore service at {base} "
                                      f"broke: {err}. Retry; if it persists, check the "
                                      "service's output.") from None
    except ValueError as err:
        raise ServiceError(f"{base} answered with something that is not JSON ({err}); is it a "
                           "featstore service?") from None


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


def _opener(base: str) -> urllib.request.OpenerDirector:
    """No proxy for a service on this machine (a proxy from the environment would not
    reach 127.0.0.1); the environment's proxies otherwise."""
    host = urlsplit(base).hostname or ""
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if local:
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return urllib.request.build_opener()
