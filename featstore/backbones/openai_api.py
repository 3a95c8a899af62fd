"""OpenAI-compatible embeddings over HTTP: ``openai:MODEL``.

The key comes from the environment only (``OPENAI_API_KEY`` by default) and never
reaches metadata, logs or error messages. Requests are batched and rate-limited, and
retried by urllib3 (:mod:`featstore.utils.retries`) on 408/409/429 (honouring
Retry-After), 5xx, timeouts and dropped connections, with exponential backoff and
jitter. Progress survives failures: the extractor commits every finished chunk, so a
rerun after an outage asks only for what is missing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import torch

from featstore.errors import ConfigError, EmbeddingAPIError
from featstore.backbones._base import Backbone

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


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
        Model name sent to the API (e.g. ``text-embedding-ada-002``).
    base_url : str, optional
        API root; default ``$OPENAI_BASE_URL`` or https://api.openai.com/v1.
    api_key_env : str
        Name of the environment variable holding the key.
    batch_size : int
        Texts per request (the extractor's batches are split to this size).
    requests_per_minute : float, optional
        Client-side rate limit.
    max_retries : int
        Retries of one request before giving up.
    backoff, max_backoff : float
        Seconds of backoff: none before the first retry, then ``backoff`` x 2^(n-2)
        plus up to ``backoff``/2 of jitter before the n-th (1-1.5 s, 2-2.5 s, 4-4.5 s,
        ... by default), at most ``max_backoff``; a Retry-After header's wait instead,
        when the service sends one.
    sleep : callable
        Injected for tests (defaults to ``time.sleep``).
    """

    modality = "text"
    remote = True

    def __init__(self, model: str, *, base_url: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", batch_size: int = 256,
                 max_retries: int = 6, backoff: float = 1.0, max_backoff: float = 60.0,
                 requests_per_minute: float | None = None, timeout: float = 30.0,
                 dimensions: int | None = None, sleep: Callable[[float], None] = time.sleep):
        from featstore.utils.retries import session_with_retries

        if not model or not model.strip():
            raise ConfigError("openai: needs a model name, e.g. openai:text-embedding-ada-002.")
        for name, value, low in (("batch_size", batch_size, 1), ("max_retries", max_retries, 0),
                                 ("dimensions", dimensions if dimensions is not None else 1, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"The '{name}' option of openai: must be an integer >= {low}. "
                                  f"Got {value!r} instead.")
        self.model = model
        origin = ("the base_url option" if base_url else
                  "OPENAI_BASE_URL" if os.environ.get("OPENAI_BASE_URL") else "the default URL")
        self.base_url, self.public_url = _checked_base_url(
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, origin, api_key_env)
        self.api_key_env = api_key_env
        self.batch_size, self.max_retries = int(batch_size), int(max_retries)
        self.timeout = timeout
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.dimensions = dimensions
        self.num_features = dimensions  # learned from the first answer when None
        self._sleep = sleep
        self._last_request = 0.0
        self._lock = threading.Lock()
        # Embedding the same texts twice gives the same answer: POST is safe to retry.
        self._session = session_with_retries(
            self.max_retries, status=RETRY_STATUS, methods=("POST",), backoff=backoff / 2,
            max_backoff=max_backoff, sleep=sleep, on_retry=self._on_retry)
        self._session.auth = _bearer(api_key_env)  # never Basic auth from the URL or ~/.netrc
        self.id = f"openai:{model}"
        self.requests_sent = 0

    def provenance(self) -> dict[str, Any]:
        return {"id": self.id, "architecture": "api", "weights_sha256": None,
                "weights_source": f"api:{self.public_url}", "model": self.model,
                "dimensions": self.dimensions, "layer": "embedding", "pooling": "api",
                "num_features": self.num_features, "preprocessing": {}}

    def _headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}  # the key: see _bearer

    def encode(self, batch: list[str]) -> torch.Tensor:
        texts = list(batch)
        out = []
        for i in range(0, len(texts), self.batch_size):
            out.append(self._request(texts[i:i + self.batch_size]))
        return torch.cat(out) if out else torch.zeros((0, self.num_features or 0))

    def _throttle(self) -> None:
        with self._lock:
            wait = self._last_request + self.interval - time.monotonic()
            if wait > 0:
                self._sleep(wait)
            self._last_request = time.monotonic()

    def _on_retry(self, problem: str, number: int, wait: float) -> None:
        """Before each retry: say why, and count it against the rate limit."""
        log.warning("%s/embeddings: %s; retry %d/%d in %.1f s", self.public_url, problem,
                    number, self.max_retries, wait)
        self._throttle()
        self.requests_sent += 1

    def _request(self, texts: list[str]) -> torch.Tensor:
        import requests

        from featstore.utils.retries import attempts, causes

        parts = urlsplit(self.base_url)
        url = urlunsplit(parts._replace(path=parts.path + "/embeddings"))
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dimensions:
            body["dimensions"] = self.dimensions
        where = f"{self.public_url}/embeddings"
        again = ("Check that the service is reachable (OPENAI_BASE_URL, network, rate limits) "
                 "and rerun: chunks already committed are kept.")
        self._throttle()
        self.requests_sent += 1
        try:
            resp = self._session.post(url, json=body, headers=self._headers(),
                                      timeout=self.timeout)
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
                f"({self.model!r}) and the base URL.")
        raise EmbeddingAPIError(f"{where} failed {attempts(resp)} times (last: HTTP "
                                f"{resp.status_code}: {message}). {again}")

    def _parse(self, resp: Any, expected: int, where: str) -> torch.Tensor:
        try:
            data = sorted(resp.json()["data"], key=lambda d: d["index"])
            emb = torch.tensor([d["embedding"] for d in data], dtype=torch.float32)
        except (ValueError, KeyError, TypeError) as err:
            raise EmbeddingAPIError(f"{where} returned an answer that is not an embeddings "
                                    f"response ({type(err).__name__}).") from err
        if emb.ndim != 2 or emb.shape[0] != expected:
            raise EmbeddingAPIError(f"{where} returned {emb.shape[0] if emb.ndim else 0} "
                                    f"embeddings for {expected} texts.")
        if self.num_features is None:
            self.num_features = int(emb.shape[1])
        elif emb.shape[1] != self.num_features:
            raise EmbeddingAPIError(f"{where} returned {emb.shape[1]}-d embeddings after "
                                    f"{self.num_features}-d ones; the model behind it changed.")
        return emb


def _server_message(resp: Any) -> str:
    try:
        err = resp.json().get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        return str(msg or resp.reason)[:200]
    except ValueError:
        return (resp.text or resp.reason or "")[:200]
