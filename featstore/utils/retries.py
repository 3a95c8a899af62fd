"""Retries of HTTP requests, for featstore's two HTTP clients (the embeddings API backbone
and the extraction service's client): urllib3's :class:`~urllib3.util.retry.Retry`,
mounted on a ``requests`` session, with the few changes both need.

* ``Retry-After`` is honoured exactly, ``0`` included (urllib3 would treat ``0`` as
  absent and back off instead), and may be bounded: a server that asks for a longer
  wait than ``max_wait`` is not retried; its answer goes back to the caller, whose
  error says when to try again.
* The wait goes through an injectable ``sleep`` (tests run without waiting), and
  ``on_retry`` hears of each retry before its wait (logs, client-side rate limits).

Without ``Retry-After`` the wait is urllib3's backoff: none before the first retry,
then ``backoff_factor`` x 2^(n-1) seconds (plus up to ``backoff_jitter``), at most
``backoff_max``.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Collection

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry

#: ``on_retry(problem, retry_number, wait_seconds)``: ``problem`` is e.g. "HTTP 503" or
#: "ConnectionError", ``retry_number`` counts from 1.
OnRetry = Callable[[str, int, float], None]


class Retries(Retry):
    """urllib3's Retry with Retry-After honoured exactly and bounded, an injectable
    ``sleep`` and an ``on_retry`` hook (see the module's docstring)."""

    def __init__(self, *args: Any, sleep: Callable[[float], None] = time.sleep,
                 on_retry: OnRetry | None = None, max_wait: float | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.sleep_fn, self.on_retry, self.max_wait = sleep, on_retry, max_wait

    def new(self, **kwargs: Any) -> "Retries":
        retry = super().new(**kwargs)
        retry.sleep_fn, retry.on_retry, retry.max_wait = self.sleep_fn, self.on_retry, self.max_wait
        return retry

    def retry_after(self, response: Any) -> float | None:
        """The answer's Retry-After in seconds (None: absent or unreadable)."""
        if response is None or not self.respect_retry_after_header:
            return None
        try:
            return self.get_retry_after(response)
        except InvalidHeader:
            return None

    def increment(self, method: str | None = None, url: str | None = None,
                  response: Any = None, error: Exception | None = None, _pool: Any = None,
                  _stacktrace: Any = None) -> "Retries":
        wait = self.retry_after(response)
        if self.max_wait is not None and wait is not None and wait > self.max_wait:
            raise MaxRetryError(_pool, url, ResponseError(  # type: ignore[arg-type]
                f"Retry-After {wait:g} s is longer than {self.max_wait:g} s"))
        return super().increment(method, url, response, error, _pool, _stacktrace)

    def sleep(self, response: Any = None) -> None:
        wait = self.retry_after(response)
        if wait is None:
            wait = self.get_backoff_time()
        if self.on_retry is not None:
            last = self.history[-1] if self.history else None
            problem = (f"HTTP {last.status}" if last is not None and last.status
                       else type(last.error).__name__ if last is not None and last.error
                       else "an error")
            self.on_retry(problem, len(self.history), wait)
        self.sleep_fn(wait)


def session_with_retries(retries: int, *, status: Collection[int],
                         methods: Collection[str] = ("GET", "POST"),
                         backoff: float = 0.5, max_backoff: float = 60.0,
                         **kwargs: Any) -> requests.Session:
    """A session that retries ``retries`` times: on the ``status`` codes (their last
    answer is returned, not raised), on dropped connections and timeouts, for
    ``methods`` (give only idempotent ones). ``kwargs``: :class:`Retries`' own
    (``sleep``, ``on_retry``, ``max_wait``) and urllib3's (e.g. ``connect=0``)."""
    policy = Retries(total=retries, status_forcelist=tuple(status),
                     allowed_methods=frozenset(methods), backoff_factor=backoff,
                     backoff_jitter=backoff, backoff_max=max_backoff, raise_on_status=False,
                     respect_retry_after_header=True, **kwargs)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=policy)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def attempts(response: Any) -> int:
    """How many requests an answer took (1 + the retries before it)."""
    retries = getattr(getattr(response, "raw", None), "retries", None)
    return 1 + len(retries.history) if retries is not None else 1


def causes(err: BaseException) -> list[BaseException]:
    """``err`` and what it wraps, outermost first: requests wraps urllib3's errors, which
    wrap the operating system's (``[ConnectionError, MaxRetryError, NewConnectionError,
    ConnectionRefusedError]``)."""
    chain: list[BaseException] = []
    e: Any = err
    while isinstance(e, BaseException) and not any(e is c for c in chain):
        chain.append(e)
        inner = e.args[0] if e.args and isinstance(e.args[0], BaseException) else None
        e = e.__cause__ or getattr(e, "reason", None) or inner
    return chain
