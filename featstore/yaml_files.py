"""Reading YAML config files (extract jobs, sweeps) with errors a user can act on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError


def read_mapping(path: str | Path, what: str, example: str) -> dict[str, Any]:
    """The top-level mapping of a YAML file (safe_load: no code runs)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"Cannot read {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of {what} options, e.g. {example}.")
    return data
