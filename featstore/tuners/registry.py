"""The tuner registry: every method `featstore tune`, the sweep, the report and the demo
know, in one place and one order.

An entry carries what the CLI and the docs show (name, description, task, the defaults
of the shared training options, options it has no use for) and a factory that imports
the estimator only when called: importing this module never imports torch. The order
of registration is the order everything shows the methods in (the baseline first).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from featstore.errors import ConfigError
from featstore.utils.registry import Registry, check_name

#: Options a tuner has no use for: the values that are harmless to pass anyway (they ask
#: for what the tuner does regardless, so a loop over methods with the same flags runs),
#: and why any other value is refused (it would silently change nothing the user asked for).
NotUsed = Mapping[str, tuple[tuple[str, ...], str]]


@dataclass(frozen=True)
class TunerEntry:
    """One registered tuning method."""

    name: str                                  # normalised, e.g. "nmtune"
    factory: Callable[..., Any]                # factory(dim=D, random_state=seed, **params)
    description: str                           # one line, for help and docs
    estimator: str                             # "module:Class" of what the factory returns
    task: str = "classification, regression"   # the label kinds it trains on
    defaults: Mapping[str, Any] = field(default_factory=dict)  # of epochs, lr, batch_size
    fixed: frozenset[str] = frozenset()        # estimator parameters the factory fixes
    not_used: NotUsed = field(default_factory=dict)
    saves_heads: bool = True                   # `tune --save-heads` applies
    demo: bool = False                         # run by `featstore demo` and the experiments

    def estimator_class(self) -> type:
        module, _, attr = self.estimator.partition(":")
        return getattr(importlib.import_module(module), attr)

    def param_names(self) -> set[str]:
        """The parameters a user may set (``random_state`` is the seed, set by the caller)."""
        names = set(self.estimator_class()().get_params())
        return names - set(self.fixed) - {"random_state"}

    def as_row(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "task": self.task,
                "saves_heads": self.saves_heads}


_REGISTRY: Registry[TunerEntry] = Registry("tuner")


def register_tuner(name: str | None = None, *, description: str, estimator: str,
                   task: str = "classification, regression",
                   defaults: Mapping[str, Any] | None = None, fixed: Iterable[str] = (),
                   not_used: NotUsed | None = None, saves_heads: bool = True,
                   demo: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a tuner factory under ``name`` (default: the function's name).

    The factory is called as ``factory(dim=D, random_state=seed, **params)`` and returns
    a scikit-learn-style estimator of class ``estimator`` (``"module:Class"``, imported
    only when needed). ``fixed`` names the estimator parameters the factory sets itself;
    ``not_used`` the options it has no use for (see :data:`NotUsed`). Returns the
    factory unchanged.
    """
    if ":" not in estimator:
        raise ValueError(f"estimator must be 'module:Class'; got {estimator!r}.")

    def decorate(factory: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.add(TunerEntry(
            name=check_name(factory.__name__ if name is None else name, "tuner"), factory=factory,
            description=description, estimator=estimator, task=task,
            defaults=dict(defaults or {}), fixed=frozenset(fixed), not_used=dict(not_used or {}),
            saves_heads=saves_heads, demo=demo))
        return factory

    return decorate


def unregister_tuner(name: str) -> TunerEntry:
    """Remove a registered tuner (KeyError if it is not registered)."""
    return _REGISTRY.remove(name)


def list_tuners(pattern: str | Iterable[str] | None = None, *,
                exclude: str | Iterable[str] | None = None, demo: bool = False) -> list[str]:
    """Registered tuner names in registration order, filtered by fnmatch ``pattern``(s);
    ``demo=True``: only those `featstore demo` runs."""
    return [e.name for e in tuner_entries(pattern, exclude=exclude) if e.demo or not demo]


def tuner_entries(pattern: str | Iterable[str] | None = None, *,
                  exclude: str | Iterable[str] | None = None) -> list[TunerEntry]:
    return _REGISTRY.entries(pattern, exclude)


def get_tuner(name: str) -> TunerEntry:
    """The entry of ``name``; an unknown name raises :class:`ConfigError` with the close
    matches and the known names."""
    entry = _REGISTRY.get(name) if isinstance(name, str) else None
    if entry is None:
        raise ConfigError(f"Unknown tuning method {name!r}.{_REGISTRY.did_you_mean(str(name))} "
                          f"Known methods: {', '.join(_REGISTRY.names())}.")
    return entry


def create_tuner(name: str, *, dim: int, random_state: int | None = 0, task: str | None = None,
                 **params: Any) -> Any:
    """A new, unfitted estimator of method ``name`` for ``dim``-dimensional features.

    ``task``: the task the training store records ("classification" or "regression"),
    set on an estimator that takes one unless ``params`` sets it, so that features
    loaded into memory keep the store's task (integral regression targets stay a
    regression); None or another value: the estimator's own rule.
    """
    est = get_tuner(name).factory(dim=dim, random_state=random_state, **params)
    if (task in ("classification", "regression") and "task" not in params
            and "task" in est.get_params(deep=False)):
        est.set_params(task=task)
    return est


def head_classes() -> dict[str, type]:
    """Estimator classes whose heads `featstore tune --save-heads` writes, by class name
    (the name a saved head's ``.json`` records)."""
    out: dict[str, type] = {}
    for entry in _REGISTRY:
        if entry.saves_heads:
            cls = entry.estimator_class()
            out.setdefault(cls.__name__, cls)
    return out


def option_help(option: str) -> str:
    """The default of a shared training option per method, for a help text, e.g.
    ``lp 0.01, mlp/nmtune/nmtune-authors 0.001; not for logreg``."""
    groups: dict[str, list[str]] = {}
    never = []
    for entry in _REGISTRY:
        if option in entry.not_used:
            never.append(entry.name)
        elif option in entry.defaults:
            groups.setdefault(str(entry.defaults[option]), []).append(entry.name)
    parts = ([next(iter(groups))] if len(groups) == 1 else
             [f"{'/'.join(names)} {value}" for value, names in groups.items()])
    return ", ".join(parts) + (f"; not for {', '.join(never)}" if never else "")
