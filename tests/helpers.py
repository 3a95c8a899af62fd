"""Helpers shared by the tests (imported as ``helpers``; fixtures stay in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

#: What a tree snapshot records of each entry: kind, size, mode bits and content hash.
Snapshot = dict[str, tuple[str, int, int, str]]


def snapshot(*roots: Path) -> Snapshot:
    """Every file, folder and link under ``roots`` (links are not followed).

    Compare two snapshots to assert that an operation wrote, changed or removed nothing
    outside what it was allowed to touch.
    """
    out: Snapshot = {}
    for root in roots:
        root = Path(root)
        if not os.path.lexists(root):
            continue
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                st = p.lstat()
                if stat.S_ISLNK(st.st_mode):
                    out[str(p)] = ("link", 0, 0, os.readlink(p))
                elif stat.S_ISDIR(st.st_mode):
                    out[str(p)] = ("dir", 0, stat.S_IMODE(st.st_mode), "")
                else:
                    digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    out[str(p)] = ("file", st.st_size, stat.S_IMODE(st.st_mode), digest)
    return out


def diff_snapshots(before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    return {
        "added": sorted(set(after) - set(before)),
        "removed": sorted(set(before) - set(after)),
        "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k]),
    }


def assert_unchanged(before: Snapshot, after: Snapshot, *, allow_prefix: tuple[str, ...] = ()
                     ) -> None:
    """Nothing added, removed or changed, except under the paths in ``allow_prefix``."""
    d = diff_snapshots(before, after)
    bad = {k: [p for p in v if not p.startswith(tuple(str(a) for a in allow_prefix))]
           for k, v in d.items()}
    assert not any(bad.values()), f"tree changed: {bad}"


def error_lines(result: Any) -> list[str]:
    """The non-empty lines a click result printed on stderr (stdout if not separated)."""
    try:
        text = result.stderr
    except (ValueError, AttributeError):
        text = result.output
    return [line for line in text.splitlines() if line.strip()]


def assert_user_error(result: Any, *needles: str) -> str:
    """A CLI call (click's CliRunner or a subprocess) failed as a user error should.

    Exit code not 0, no traceback, exactly one line starting with ``Error:`` on stderr,
    and each of ``needles`` (case-insensitive) in that line. Returns the line.
    """
    code = getattr(result, "exit_code", None)
    if code is None:
        code = result.returncode
    out = (getattr(result, "output", None) or "") + (getattr(result, "stderr", None) or "")
    exc = getattr(result, "exception", None)
    assert code not in (0, None), f"exit code 0 for a user error:\n{out}"
    assert "Traceback" not in out, out
    if exc is not None:
        assert isinstance(exc, SystemExit), f"unhandled {type(exc).__name__}: {exc}\n{out}"
    lines = [line for line in error_lines(result) if line.startswith("Error:")]
    assert len(lines) == 1, f"expected one 'Error:' line, got {lines}:\n{out}"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"
    return lines[0]
