"""Named registries with timm's conventions (``timm.models._registry``), shared by the
backbone, tuner and data set registries.

Names are normalised once (``all_MiniLM_L6_v2`` and ``all-minilm-l6-v2`` are one name),
kept in registration order (the order the CLI, the report and the docs show them in),
listed through fnmatch patterns, and an unknown name gets the close matches. Registering
a name that exists replaces it with a warning, as timm does: a plugin may override a
built-in on purpose, but never silently.
"""

from __future__ import annotations

import difflib
import fnmatch
import warnings
from typing import Generic, Iterable, Iterator, Protocol, TypeVar


class Named(Protocol):
    name: str


E = TypeVar("E", bound=Named)


def normalize(name: str) -> str:
    """The registry form of a name: stripped, lower case, ``_`` as ``-``."""
    return name.strip().lower().replace("_", "-")


def _patterns(value: str | Iterable[str] | None) -> list[str]:
    if not value:
        return []
    return [normalize(value)] if isinstance(value, str) else [normalize(v) for v in value]


class Registry(Generic[E]):
    """Entries by normalised name, in registration order."""

    def __init__(self, what: str):
        self.what = what  # "backbone", "tuner", "data set": for messages
        self._entries: dict[str, E] = {}

    def add(self, entry: E) -> E:
        if entry.name in self._entries and self._entries[entry.name] is not entry:
            warnings.warn(f"Overwriting the {self.what} {entry.name!r} in featstore's registry; "
                          "check that this is intended.", UserWarning, stacklevel=3)
        self._entries[entry.name] = entry
        return entry

    def remove(self, name: str) -> E:
        """Take an entry out (tests, plugins that withdraw a name); KeyError if absent."""
        return self._entries.pop(normalize(name))

    def get(self, name: str) -> E | None:
        return self._entries.get(normalize(name))

    def entries(self, pattern: str | Iterable[str] | None = None,
                exclude: str | Iterable[str] | None = None) -> list[E]:
        """Entries whose name matches any of ``pattern`` and none of ``exclude`` (fnmatch,
        case-insensitive; no pattern: all), in registration order."""
        include, leave = _patterns(pattern), _patterns(exclude)
        return [e for name, e in self._entries.items()
                if (not include or any(fnmatch.fnmatchcase(name, p) for p in include))
                and not any(fnmatch.fnmatchcase(name, p) for p in leave)]

    def names(self, pattern: str | Iterable[str] | None = None,
              exclude: str | Iterable[str] | None = None) -> list[str]:
        return [e.name for e in self.entries(pattern, exclude)]

    def close_matches(self, name: str, among: Iterable[str] | None = None) -> list[str]:
        """Up to three registered names that look like ``name`` (a typo's likely target)."""
        candidates = list(self._entries) if among is None else list(among)
        return difflib.get_close_matches(normalize(name), candidates, n=3, cutoff=0.5)

    def did_you_mean(self, name: str, among: Iterable[str] | None = None) -> str:
        """`` Did you mean a or b?`` (with its leading space), or nothing."""
        close = self.close_matches(name, among)
        return f" Did you mean {' or '.join(close)}?" if close else ""

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and normalize(name) in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


def check_name(name: str, what: str) -> str:
    """A name to register: non-empty, printable, without ':' (which separates a scheme
    or a plugin module from its argument in a spec) or '/' (a path)."""
    if not isinstance(name, str) or not normalize(name) or not name.isprintable() \
            or any(c in name for c in ":/\\"):
        raise ValueError(f"A {what} name must be a non-empty printable string without ':', "
                         f"'/' or '\\'; got {name!r}.")
    return normalize(name)
