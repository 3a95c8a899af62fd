"""Checking, before any work, that an output path can be written.

`tune --results`, `--save-heads`, `predict --out` and `noise --out` are written at the
end of a call; a folder given where a file is expected, a path under a regular file, or
a place without write permission would otherwise fail only after minutes of training.
These checks create nothing (a probe file is anonymous and gone when closed).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from featstore.errors import ConfigError


def check_output_file(path: Any, option: str, example: str = "results.jsonl") -> Path:
    """``path`` can be created (or appended to); refuse it in one line otherwise."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file path inside it instead, "
                          f"e.g. {p / example}.")
    if p.exists():
        try:
            open(p, "ab").close()  # appending nothing changes nothing
        except OSError as err:
            raise ConfigError(f"{option} {path} cannot be written ({err.strerror}). Choose a "
                              "file you can write to.") from None
        return p
    _check_can_create(p, option)
    return p


def check_output_dir(path: Any, option: str) -> Path:
    """``path`` is a writable folder or can be created as one; refuse it otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{option} {path} is a file, not a folder; give a folder (it is "
                          "created if missing).")
    if p.is_dir():
        _probe(p, p, option)
    else:
        _check_can_create(p, option)
    return p


def _check_can_create(p: Path, option: str) -> None:
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"{option} {p} cannot be created: {ancestor} is a file, not a folder. "
                          "Give a path in a folder.")
    _probe(ancestor, p, option)


def _probe(folder: Path, target: Path, option: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise ConfigError(f"{option} {target} cannot be written: {folder} does not accept new "
                          f"files ({err.strerror}). Choose a folder you can write to.") from None
