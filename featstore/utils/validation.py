"""Parameter checks with one message shape for every caller.

Configs (:class:`~featstore.extract.ExtractConfig`, ``PretrainConfig``), the tuners,
``tune``/``sweep`` and the extraction service check their values with the rules here,
so that a bad value reads the same wherever it was given (flag, config file, request,
Python call)::

    The 'batch_size' option of extract must be an int in [1, 65536]. Got 0 instead.

Estimators say "parameter" where configs say "option", as scikit-learn does. A rule
is an object with ``accepts(value) -> bool`` whose ``str()`` completes "must be ...".
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
from typing import Any, Protocol

from featstore.errors import ConfigError

INF = math.inf

_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 80, 80, 3


def show(value: Any) -> str:
    """A short repr of a value from a user (a request may hold huge or deeply nested ones)."""
    return _SHORT.repr(value)


class Rule(Protocol):
    def accepts(self, value: Any) -> bool: ...

    def __str__(self) -> str: ...


class Interval:
    """Numbers of one kind between two bounds: ``Interval(int, 1, INF, "left")`` is
    "an int in [1, inf)".

    ``int`` means a Python int (not a bool, not 3.0, not a numpy integer: those would
    reach JSON metadata and keys as another type); ``float`` means any real number
    except a bool. NaN is never inside an interval. ``closed`` is ``"both"``,
    ``"left"``, ``"right"`` or ``"neither"``.
    """

    def __init__(self, kind: type, low: float, high: float, closed: str = "both"):
        if kind not in (int, float) or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"Interval({kind!r}, ..., closed={closed!r})")
        self.kind, self.low, self.high, self.closed = kind, low, high, closed

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not isinstance(value, numbers.Real) or math.isnan(value):
            return False
        above = value >= self.low if self.closed in ("both", "left") else value > self.low
        below = value <= self.high if self.closed in ("both", "right") else value < self.high
        return above and below

    def bounds(self) -> str:
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{left}{_number(self.low)}, {_number(self.high)}{right}"

    @property
    def plural(self) -> str:
        return f"{self.kind.__name__}s in {self.bounds()}"

    def __str__(self) -> str:
        return f"{'an int' if self.kind is int else 'a float'} in {self.bounds()}"

    def __repr__(self) -> str:
        return f"Interval({self.kind.__name__}, {self.low}, {self.high}, {self.closed!r})"


def _number(x: float) -> str:
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(x)


class Options:
    """One of a few values (compared with ``==``; a bool is never taken for 0 or 1)."""

    def __init__(self, *values: Any):
        self.values = values

    def accepts(self, value: Any) -> bool:
        try:
            return any(value == v and isinstance(value, bool) == isinstance(v, bool)
                       for v in self.values)
        except Exception:  # an object whose == raises is not one of them
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in self.values)


class Boolean:
    """True or False (not 0, 1 or "yes": those are easy to pass by mistake)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def __str__(self) -> str:
        return "a bool"


class Text:
    """A non-empty string; with ``paths=True`` also a path object (``pathlib.Path``)."""

    plural = "non-empty strings"

    def __init__(self, *, paths: bool = False):
        self.paths = paths

    def accepts(self, value: Any) -> bool:
        if self.paths and isinstance(value, os.PathLike):
            return True
        return isinstance(value, str) and bool(value.strip())

    def __str__(self) -> str:
        return "a non-empty string" + (" or a path" if self.paths else "")


class Dict:
    """A dict (a YAML mapping, a JSON object)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, dict)

    def __str__(self) -> str:
        return "a mapping"


class OrNone:
    """``rule``, or None (unset: the caller's default applies)."""

    def __init__(self, rule: Rule):
        self.rule = rule

    def accepts(self, value: Any) -> bool:
        return value is None or self.rule.accepts(value)

    def __str__(self) -> str:
        return f"{self.rule} or None"


class ListOf:
    """A non-empty list, tuple or 1-d array whose items all follow ``rule`` (an
    :class:`Interval` or :class:`Text`: a rule with a ``plural``)."""

    def __init__(self, rule: Interval | Text):
        self.rule = rule

    def accepts(self, value: Any) -> bool:
        if getattr(value, "ndim", None) == 1 and hasattr(value, "tolist"):  # a numpy vector
            value = value.tolist()
        return (isinstance(value, (list, tuple)) and len(value) > 0
                and all(self.rule.accepts(v) for v in value))

    def __str__(self) -> str:
        return f"a non-empty list of {self.rule.plural}"


class AnyOf:
    """Any one of ``rules``."""

    def __init__(self, *rules: Rule):
        self.rules = rules

    def accepts(self, value: Any) -> bool:
        return any(r.accepts(value) for r in self.rules)

    def __str__(self) -> str:
        return " or ".join(str(r) for r in self.rules)


def invalid(name: str, value: Any, expected: Any, *, owner: str | None = None,
            noun: str = "option", why: str = "") -> ConfigError:
    """The error for a bad value: "The 'NAME' NOUN of OWNER must be EXPECTED[WHY]. Got
    VALUE instead." ``expected`` is a rule or a phrase; ``why`` says where a bound
    comes from (e.g. " on this service")."""
    of = f" of {owner}" if owner else ""
    return ConfigError(f"The '{name}' {noun}{of} must be {expected}{why}. "
                       f"Got {show(value)} instead.")


def check(name: str, value: Any, rule: Rule, *, owner: str | None = None,
          noun: str = "option", why: str = "") -> Any:
    """``value`` if ``rule`` accepts it; else the :func:`invalid` error (a ConfigError)."""
    if not rule.accepts(value):
        raise invalid(name, value, rule, owner=owner, noun=noun, why=why)
    return value


def check_all(obj: Any, rules: dict[str, Rule], *, owner: str, noun: str = "option") -> None:
    """Check the attribute of ``obj`` named by each key of ``rules``, in order."""
    for name, rule in rules.items():
        check(name, getattr(obj, name), rule, owner=owner, noun=noun)
