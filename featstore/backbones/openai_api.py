"""OpenAI-compatible embeddings over HTTP: ``openai:MODEL``.

The key comes from the environment only (``OPENAI_API_KEY`` by default) and never
reaches metadata, logs or error messages. A batch is split into requests of at most
``texts_per_request`` texts, up to ``concurrency`` of them in flight at once (rows are
placed by position, never by arrival order), rate-limited, and retried by urllib3
(:mod:`featstore.utils.retries`) on 408/409/429 (honouring Retry-After), 5xx, timeouts
and dropped connections, with exponential backoff and jitter. Progress survives
failures: the extractor commits every finished chunk, so a rerun after an outage asks
only for what is missing.

The name of a model says little about what a service computes: restarted with another
pooling or another checkpoint, it answers under the same name and dimension.
:meth:`OpenAIEmbeddings.fingerprint` embeds a fixed probe text; extraction stores it
with the feature set and refuses to resume (or, with ``check_model``, to reuse) a set
whose probe embedding no longer matches (:meth:`OpenAIEmbeddings.fingerprint_mismatch`).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import torch

from featstore.errors import ConfigError, EmbeddingAPIError
from featstore.backbones._base import Backbone

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}
#: The text whose embedding identifies the model behind a name (never change it: stores
#: written with another probe cannot be compared, so they could not be resumed).
PROBE_TEXT = "featstore model fingerprint. The quick brown fox jumps over the lazy dog: 0123456789."
#: Largest relative L2 distance ||live - stored|| / ||stored|| between two probe
#: embeddings of one model (about cosine 0.99995 and norms within 1 %): room for the
#: float noise of a GPU server (float16/bfloat16 kernels, another card), far below what
#: another checkpoint or pooling gives (0.3 and more).
FINGERPRINT_RTOL = 1e-2


_DEFAULT_PORTS = {"http": 80, "https": 443}
_warned_userinfo: set[str] = set()


def _public_url(url: str) -> str:
    """The URL as the service's identity: no user:password, no query, no default port."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _checked_base_url(url: str, origin: str, api_key_env: str) -> tuple[str, str]:
    """(request URL without user:password, public URL) of an API root, or a ConfigError.

    A ``user:password@`` part is dropped with one warning: requests would send it as
    Basic auth in place of the API key. The query string is kept for the requests (some
    services need one) but never recorded.
    """
    def bad(why: str) -> ConfigError:
        return ConfigError(f"{origin} must be an http(s) URL such as https://api.openai.com/v1; "
                           f"{why}. Fix {origin}.")

    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as err:
        raise bad(f"it does not parse ({err})") from None
    if parts.scheme not in ("http", "https"):
        raise bad(f"its scheme is {parts.scheme!r}" if parts.scheme else "it has no http(s)://")
    if not parts.hostname:
        raise bad("it names no host")
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc += f":{port}" if port else ""
    public = _public_url(url.strip())
    if (parts.username or parts.password) and public not in _warned_userinfo:
        _warned_userinfo.add(public)
        log.warning("%s holds a user name and password (user:password@): ignored. The API is "
                    "called with the key in $%s (Bearer); remove them from the URL.",
                    origin, api_key_env)
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")), public


def _bearer(api_key_env: str) -> Any:
    """requests auth that sends ``Bearer $KEY`` (and nothing from the URL or ~/.netrc)."""
    import requests

    class Bearer(requests.auth.AuthBase):
        def __call__(self, r: Any) -> Any:
            r.headers.pop("Authorization", None)
            key = os.environ.get(api_key_env)
            if key:
                r.headers["Authorization"] = f"Bearer {key}"
            return r

    return Bearer()


class OpenAIEmbeddings(Backbone):
    """Embeddings from an OpenAI-compatible ``POST {base_url}/embeddings`` endpoint.

    Parameters
    ----------
    model : str
        Model name sent to the API (e.g. ``text-embedding-3-small``).
    base_url : str, optional
        API root; default ``$OPENAI_BASE_URL`` or https://api.openai.com/v1.
    api_key_env : str
        Name of the environment variable holding the key.
    dimensions : int, optional
        The API's ``dimensions`` parameter (shortened embeddings). It changes the values,
        so it is part of the provenance and of the content key.
    texts_per_request : int
        Most texts in one request; a batch is split into requests of this size.
    concurrency : int
        Requests in flight at once. 4 stays within the rate limits of most accounts and
        servers; raise it for a service of your own.
    requests_per_minute : float, optional
        Client-side rate limit (retries count against it).
    max_retries : int
        Retries of one request before giving up.
    request_timeout : float
        Seconds to wait for one answer (then it is retried).
    backoff, max_backoff : float
        Seconds of backoff: none before the first retry, then ``backoff`` x 2^(n-2)
        plus up to ``backoff``/2 of jitter before the n-th (1-1.5 s, 2-2.5 s, 4-4.5 s,
        ... by default), at most ``max_backoff``; a Retry-After header's wait instead,
        when the service sends one.
    sleep : callable
        Injected for tests (defaults to ``time.sleep``).

    Only ``dimensions`` changes the values; the others decide how fast and how
    patiently they are fetched (:meth:`settings`, recorded in metadata, not in the key).
    """

    modality = "text"
    remote = True

    def __init__(self, model: str, *, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", dimensions: int | None = None,
                 texts_per_request: int = 256, concurrency: int = 4,
                 requests_per_minute: float | None = None, max_retries: int = 6,
                 request_timeout: float = 30.0, backoff: float = 1.0, max_backoff: float = 60.0,
                 sleep: Callable[[float], None] = time.sleep):
        if not model or not model.strip():
            raise ConfigError("openai: needs a model name, e.g. openai:text-embedding-3-small.")
        _check_options(texts_per_request=texts_per_request, concurrency=concurrency,
                       max_retries=max_retries, dimensions=dimensions,
                       requests_per_minute=requests_per_minute, request_timeout=request_timeout)
        self.model = model
        origin = ("the base_url option" if base_url else
                  "OPENAI_BASE_URL" if os.environ.get("OPENAI_BASE_URL") else "the default URL")
        self.base_url, self.public_url = _checked_base_url(
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, origin, api_key_env)
        self.api_key_env = api_key_env
        self.texts_per_request, self.concurrency = int(texts_per_request), int(concurrency)
        self.max_retries, self.request_timeout = int(max_retries), float(request_timeout)
        self.requests_per_minute = requests_per_minute
        self.backoff, self.max_backoff = backoff, max_backoff
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.dimensions = dimensions
        self.num_features = dimensions  # learned from the first answer when None
        self._sleep = sleep
        self._last_request = 0.0
        self._lock = threading.Lock()  # the rate limit's clock (held while waiting a turn)
        self._dim_lock = threading.Lock()  # the first answers set num_features
        self._session = _session(self.max_retries, backoff, max_backoff, sleep,
                                 self._on_retry, self.concurrency, api_key_env)
        self.id = f"openai:{model}"
        self.requests_sent = 0

    @property
    def preferred_batch_rows(self) -> int:
        """Texts per :meth:`encode` call that keep every request slot busy: full requests,
        ``concurrency`` of them at once. The extractor's batches never cross a chunk."""
        return self.texts_per_request * self.concurrency

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "architecture": "api", "weights_sha256": None,
                "weights_source": f"api:{self.public_url}", "model": self.model,
                "dimensions": self.dimensions, "layer": "embedding", "pooling": "api",
                "num_features": self.num_features, "preprocessing": {}}

    def settings(self) -> dict[str, Any]:
        return {"texts_per_request": self.texts_per_request, "concurrency": self.concurrency,
                "requests_per_minute": self.requests_per_minute,
                "max_retries": self.max_retries, "request_timeout": self.request_timeout,
                "backoff": self.backoff, "max_backoff": self.max_backoff}

    def fingerprint(self) -> dict[str, Any]:
        """The probe text's embedding, as the service computes it now (one request).

        The vector is kept whole (float32, base64): a digest alone would call float noise
        a new model, the vector can be compared with a tolerance. Its sha256 is there for
        a glance.
        """
        vector = self._request([PROBE_TEXT])[0].astype("<f4")
        return {"probe": PROBE_TEXT, "model": self.model, "dimensions": int(vector.size),
                "float32_base64": base64.b64encode(vector.tobytes()).decode("ascii"),
                "sha256": hashlib.sha256(vector.tobytes()).hexdigest(),
                "rtol": FINGERPRINT_RTOL}

    def fingerprint_mismatch(self, stored: dict[str, Any], live: dict[str, Any]) -> str | None:
        """Why ``live`` is not the model that computed ``stored``; None when it is: the
        two probe embeddings lie within :data:`FINGERPRINT_RTOL` (relative L2)."""
        try:
            old, new = (np.frombuffer(base64.b64decode(f["float32_base64"]), "<f4")
                        for f in (stored, live))
        except (KeyError, TypeError, ValueError):
            return "the fingerprint stored with it is unreadable"
        if stored.get("probe") != live.get("probe"):
            return "it was fingerprinted with another probe text (an older featstore)"
        if old.size != new.size:
            return f"the probe text's embedding has {new.size} dimensions now, {old.size} before"
        scale = float(np.linalg.norm(old)) or 1.0
        distance = float(np.linalg.norm(new.astype(np.float64) - old)) / scale
        if distance <= FINGERPRINT_RTOL:
            return None
        cosine = float(old @ new) / (scale * (float(np.linalg.norm(new)) or 1.0))
        return (f"the probe text's embedding moved by {distance:.3g} (relative L2 distance; "
                f"cosine {cosine:.4f}), more than the {FINGERPRINT_RTOL:g} allowed for float "
                "noise")

    def encode(self, batch: Sequence[str]) -> torch.Tensor:
        texts = list(batch)
        size = self.texts_per_request
        parts = [texts[i:i + size] for i in range(0, len(texts), size)]
        out = _in_parallel(self._request, parts, self.concurrency)
        if not out:
            return torch.zeros((0, self.num_features or 0))
        return torch.from_numpy(np.concatenate(out))  # by position, whatever answered first

    def _throttle(self) -> None:
        with self._lock:
            wait = self._last_request + self.interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()
            self.requests_sent += 1

    def _on_retry(self, problem: str, number: int, wait: float) -> None:
        """Before each retry: say why, and count it against the rate limit."""
        log.warning("%s/embeddings: %s; retry %d/%d in %.1f s", self.public_url, problem,
                    number, self.max_retries, wait)
        self._throttle()

    def _request(self, texts: list[str]) -> np.ndarray:
        import requests

        from featstore.utils.retries import attempts, causes

        parts = urlsplit(self.base_url)
        url = urlunsplit(parts._replace(path=parts.path + "/embeddings"))
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        where = f"{self.public_url}/embeddings"
        again = ("Check that the service is reachable (OPENAI_BASE_URL, network, rate limits; "
                 "--concurrency, --requests-per-minute and --max-retries adjust how hard it "
                 "is pressed) and rerun: chunks already committed are kept.")
        self._throttle()
        try:
            resp = self._session.post(url, json=body, headers={"Content-Type": "application/json"},
                                      timeout=self.request_timeout)
        except (requests.ConnectionError, requests.Timeout) as err:  # after every retry
            raise EmbeddingAPIError(f"{where} failed {self.max_retries + 1} times (last: "
                                    f"{type(causes(err)[-1]).__name__}, no answer). "
                                    f"{again}") from None
        if resp.status_code == 200:
            return self._parse(resp, len(texts), where)
        message = _server_message(resp)
        if resp.status_code in (401, 403):
            raise EmbeddingAPIError(
                f"{where} refused the request ({resp.status_code}: {message}). Set a valid "
                f"key in the environment variable {self.api_key_env}.")
        if resp.status_code not in RETRY_STATUS:
            raise EmbeddingAPIError(
                f"{where} answered {resp.status_code}: {message}. Check the model name "
                f"({self.model!r}), the base URL and --dimensions; if the service takes fewer "
                f"texts per request than {len(texts)}, lower --texts-per-request.")
        raise EmbeddingAPIError(f"{where} failed {attempts(resp)} times (last: HTTP "
                                f"{resp.status_code}: {message}). {again}")

    def _parse(self, resp: Any, expected: int, where: str) -> np.ndarray:
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            emb = np.array([d["embedding"] for d in data], dtype=np.float32)
        except (ValueError, KeyError, TypeError) as err:
            raise EmbeddingAPIError(f"{where} returned an answer that is not an embeddings "
                                    f"response ({type(err).__name__}).") from err
        if emb.ndim != 2 or emb.shape[0] != expected:
            raise EmbeddingAPIError(f"{where} returned {emb.shape[0] if emb.ndim else 0} "
                                    f"embeddings for {expected} texts.")
        with self._dim_lock:  # several requests may answer first at once
            if self.num_features is None:
                self.num_features = int(emb.shape[1])
        if emb.shape[1] != self.num_features:
            raise EmbeddingAPIError(f"{where} returned {emb.shape[1]}-d embeddings after "
                                    f"{self.num_features}-d ones; the model behind it changed.")
        return emb


def _check_options(**values: Any) -> None:
    """Refuse bad option values with the message shape of every featstore option."""
    from featstore.utils.validation import INF, Interval, check

    rules = {"texts_per_request": Interval(int, 1, INF), "concurrency": Interval(int, 1, 1024),
             "max_retries": Interval(int, 0, INF), "dimensions": Interval(int, 1, INF),
             "requests_per_minute": Interval(float, 0, INF, "neither"),
             "request_timeout": Interval(float, 0, INF, "neither")}
    for name, value in values.items():
        if value is not None or name not in ("dimensions", "requests_per_minute"):
            check(name, value, rules[name], owner="openai:MODEL")


def _session(retries: int, backoff: float, max_backoff: float, sleep: Callable[[float], None],
             on_retry: Callable[[str, int, float], None], connections: int,
             api_key_env: str) -> Any:
    """One session for every request thread: urllib3's pool is thread-safe, and keeping
    ``connections`` connections open spares a TLS handshake per request."""
    from requests.adapters import HTTPAdapter

    from featstore.utils.retries import session_with_retries

    # Embedding the same texts twice gives the same answer: POST is safe to retry.
    session = session_with_retries(retries, status=RETRY_STATUS, methods=("POST",),
                                   backoff=backoff / 2, max_backoff=max_backoff, sleep=sleep,
                                   on_retry=on_retry)
    for prefix in ("http://", "https://"):
        policy = session.get_adapter(prefix).max_retries
        session.mount(prefix, HTTPAdapter(max_retries=policy, pool_maxsize=max(connections, 10)))
    session.auth = _bearer(api_key_env)  # never Basic auth from the URL or ~/.netrc
    return session


def _in_parallel(fn: Callable[[Any], Any], items: list[Any], workers: int) -> list[Any]:
    """``[fn(x) for x in items]`` with up to ``workers`` calls at once, results in order.
    The first error is raised at once; calls still in flight are abandoned (their
    threads start no new call and end with their request).

    Daemon threads, not a ThreadPoolExecutor: after Ctrl-C or an error, a request still
    in flight must not hold the process open until its timeout.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []
    queue = iter(range(len(items)))
    lock, finished = threading.Lock(), threading.Event()
    left = [len(items)]

    def work() -> None:
        while not errors:
            with lock:
                i = next(queue, None)
            if i is None:
                return
            try:
                results[i] = fn(items[i])
            except BaseException as err:  # handed to the caller's thread
                errors.append(err)
                finished.set()
                return
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    finished.set()

    for n in range(min(workers, len(items))):
        threading.Thread(target=work, name=f"featstore-api-{n}", daemon=True).start()
    finished.wait()
    if errors:
        raise errors[0]
    return results


def _server_message(resp: Any) -> str:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or resp.reason)[:200]
    except ValueError:
        return (resp.text or resp.reason or "")[:200]
