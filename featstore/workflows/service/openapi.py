"""The service's OpenAPI schema (``GET /openapi.json``), for clients and their generators.

Paths and operations come from the endpoints' docstrings (Starlette's
:class:`~starlette.schemas.SchemaGenerator` reads the YAML after ``---``); the job
request's properties come from :class:`~featstore.extract.config.ExtractConfig` itself,
with this service's bounds (``serve --limits``) as maxima, so the schema cannot drift
from what the service accepts.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from starlette.routing import BaseRoute
from starlette.schemas import SchemaGenerator

from featstore.workflows.service.requests import accepted_options

#: JSON schemas of ExtractConfig's field types (their annotations, as strings).
TYPES: dict[str, dict[str, Any]] = {
    "list[str]": {"oneOf": [{"type": "string"},
                            {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
    "str": {"type": "string"},
    "str | None": {"type": "string", "nullable": True},
    "int": {"type": "integer"},
    "int | None": {"type": "integer", "nullable": True},
    "bool": {"type": "boolean"},
    "float": {"type": "number"},
    "dict[str, Any]": {"type": "object",
                       "additionalProperties": {"type": "string", "nullable": True}},
}
JOB = {"type": "object", "description": "A job as GET /jobs/ID shows it.",
       "properties": {name: {} for name in (
           "id", "state", "status", "backbone", "dataset", "split", "request_key",
           "submitted_by", "attempts", "max_attempts", "worker", "worker_pid", "device",
           "created_at", "started_at", "finished_at", "progress", "key", "path", "result",
           "error", "last_error", "options")}}
ERROR = {"type": "object", "required": ["error"],
         "properties": {"error": {"type": "string", "description": "what was expected"}}}


def job_request_schema(limits: Mapping[str, int]) -> dict[str, Any]:
    """The body of ``POST /jobs``: extract options, with this service's maxima."""
    from featstore.extract.config import RANGES, ExtractConfig

    fields = {f.name: f for f in dataclasses.fields(ExtractConfig)}
    properties: dict[str, Any] = {}
    for name in accepted_options():
        f = fields[name]
        prop = dict(TYPES.get(str(f.type), {}))
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            prop["default"] = f.default_factory()  # type: ignore[misc]
        if name in RANGES:
            prop["minimum"] = RANGES[name].low
            prop["maximum"] = min(RANGES[name].high, limits.get(name, RANGES[name].high))
        properties[name] = prop
    return {"type": "object", "required": ["backbones", "datasets"],
            "properties": properties, "additionalProperties": False,
            "description": "The options of `featstore extract` (also: backbone, dataset, "
                           "split). One job per backbone x data set x split."}


def openapi_schema(routes: list[BaseRoute], limits: Mapping[str, int],
                   version: str) -> dict[str, Any]:
    base = {
        "openapi": "3.0.3",
        "info": {"title": "featstore extraction service", "version": version,
                 "description": "Submit `featstore extract` jobs to a shared root; "
                                "see docs/service.md."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"JobRequest": job_request_schema(limits), "Job": JOB,
                        "Error": ERROR},
        },
    }
    return SchemaGenerator(base).get_schema(routes)
