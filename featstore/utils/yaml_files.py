"""Reading YAML config files (extract jobs, sweeps) with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featstore.errors import ConfigError


def read_mapping(path: str | Path, what: str, example: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (safe_load: no code runs)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.MarkedYAMLError as err:  # one line: the problem and where, no excerpt
        mark = err.problem_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = str(err.problem or err.context)
        hint = " Only plain YAML is read: tags that build objects are refused." \
            if "constructor" in problem else ""
        raise ConfigError(f"Cannot read {what} {path}: {problem}{where}.{hint}") from None
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"Cannot read {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of {what} options, e.g. {example}.")
    return data
