"""The extraction service: `featstore serve`, `featstore submit`, `featstore jobs`.

An HTTP JSON API (:mod:`.app` on Starlette, served by uvicorn: :mod:`.http_server`)
takes extraction requests with the options of `featstore extract` (:mod:`.requests`),
authenticated by bearer tokens (:mod:`.tokens`), into a persistent SQLite job queue
(:mod:`.queue`); one worker process per device (:mod:`.worker`, started and watched by
:mod:`.supervisor`; or one Ray actor per device of a cluster, :mod:`.ray_workers`)
claims jobs, grouped by backbone, and runs them into the service's root. :mod:`.server` puts these together for `featstore serve` (settings:
:mod:`.config`; answers: :mod:`.handlers`). :mod:`.client` talks to it with `requests`
(no torch). See docs/service.md.

Importing this package is cheap: nothing here imports torch until a server or worker
runs.
"""

from featstore.workflows.service.client import get_job, health, job_log, list_jobs, submit, wait_for
from featstore.workflows.service.errors import (AuthenticationError, JobFailedError, ServiceBusyError, ServiceError,
                     ServiceUnavailableError)

__all__ = ["submit", "wait_for", "list_jobs", "get_job", "job_log", "health", "ServiceError",
           "ServiceUnavailableError", "AuthenticationError", "ServiceBusyError",
           "JobFailedError"]
