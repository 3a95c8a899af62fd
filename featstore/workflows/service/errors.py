"""Errors of the extraction service and its clients (all :class:`FeatstoreError`)."""

from __future__ import annotations

from typing import Any

from featstore.errors import ConfigError, FeatstoreError


class ServiceError(FeatstoreError, RuntimeError):
    """The service refused a request or answered with an error; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ServiceUnavailableError(ServiceError):
    """No service answers at the URL (not running, wrong address, or a network error)."""


class AuthenticationError(ServiceError):
    """The service refused the token (HTTP 401)."""


class ServiceBusyError(ServiceError):
    """The queue is full (HTTP 503) or the token has too many active jobs (HTTP 429)."""


class JobFailedError(ServiceError):
    """At least one job ended ``failed``; ``jobs`` holds every job's final state."""

    def __init__(self, message: str, jobs: list[dict[str, Any]]):
        super().__init__(message)
        self.jobs = jobs


class PathNotAllowedError(ConfigError):
    """A job names a file or folder outside the service's data folders (HTTP 403)."""

    status = 403
