"""The backbone registry: every name and scheme ``--backbone`` accepts, and the one
function that resolves a spec (used by extraction and by the service).

Like timm's ``register_model``/``list_models``/``create_model``, but light: an entry
holds what the CLI and the docs show (name, modality, description, install hint, the
options that apply) and a factory that imports its implementation only when called,
so importing this module never imports torch.

A spec is one of

- a registered name (``efficientnet-lite0``): ``factory(**options)``;
- ``SCHEME:ARGUMENT`` for a registered scheme (``timm:resnet50``, ``hf:/models/bert``):
  ``factory(argument, **options)``;
- ``module:function``, a plugin: the module is imported when the backbone is created,
  and ``function`` is called with the options. A plugin module may also register
  names with :func:`register_backbone`; ``module:name`` then uses that entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from featstore.errors import BackboneError, ConfigError, FeatstoreError, UnknownBackboneError
from featstore.utils.registry import Registry, check_name, normalize

if TYPE_CHECKING:
    from featstore.backbones._base import Backbone

#: Options any backbone may be given: extraction passes them to every backbone, so one
#: that has no use for them drops them (after :func:`_check_weights` refused weights
#: it would ignore).
COMMON_OPTIONS = ("weights", "pretrained", "image_size", "seed")
#: Options of embedding-API backbones (``openai:MODEL``). Extraction passes them only
#: when set, and only an entry that lists them takes them: a model run here would
#: ignore them, so they are refused even where an entry takes every other option.
API_OPTIONS = ("dimensions", "texts_per_request", "concurrency", "requests_per_minute",
               "max_retries", "request_timeout")
#: How a plugin is written in a spec (shown with the registered names).
PLUGIN_FORM = "module:function"


@dataclass(frozen=True)
class BackboneEntry:
    """One registered backbone name or spec scheme."""

    name: str                                  # normalised: "efficientnet-lite0" or "timm"
    factory: Callable[..., "Backbone"]         # a name: f(**options); a scheme: f(arg, **options)
    modality: str                              # "image", "text" or "any"
    description: str                           # one line, for `featstore backbones` and help
    install: str = ""                          # how to install what it needs, if anything
    argument: str | None = None                # a scheme's argument placeholder (NAME, PATH)
    argument_help: str = ""                    # what the argument is ("a model name")
    example: str = ""                          # a spec that works, for messages
    local_folder: bool = False                 # the argument is a local folder (the service
                                               # confines it to its data folders)
    options: tuple[str, ...] | None = None     # options passed on besides COMMON_OPTIONS;
                                               # None: every option is passed on
    fixed_weights: str | None = None           # why --weights/--random-weights do not apply

    @property
    def scheme(self) -> bool:
        return self.argument is not None

    @property
    def spec(self) -> str:
        """How it is written: the name, or ``scheme:ARGUMENT``."""
        return f"{self.name}:{self.argument}" if self.scheme else self.name

    def as_row(self) -> dict[str, str]:
        return {"name": self.spec, "modality": self.modality, "description": self.description,
                "install": self.install}


@dataclass(frozen=True)
class ResolvedBackbone:
    """A spec resolved to its entry (or plugin), before anything is imported."""

    spec: str                        # canonical: the name, or the spec as given (stripped)
    entry: BackboneEntry | None      # None for a plugin
    argument: str | None = None      # a scheme's argument, or a plugin's function name
    module: str | None = None        # a plugin's module

    @property
    def plugin(self) -> bool:
        return self.entry is None

    def create(self, **options: Any) -> "Backbone":
        """Build it; ``None`` options count as not given."""
        options = {k: v for k, v in options.items() if v is not None}
        if self.entry is None:
            return _create_plugin(self.module or "", self.argument or "", options)
        return _create_entry(self.entry, self.argument, options, self.spec)


_REGISTRY: Registry[BackboneEntry] = Registry("backbone")


def register_backbone(name: str | None = None, *, modality: str, description: str,
                      install: str = "", argument: str | None = None, argument_help: str = "",
                      example: str = "", local_folder: bool = False,
                      options: Iterable[str] | None = None, fixed_weights: str | None = None
                      ) -> Callable[[Callable[..., "Backbone"]], Callable[..., "Backbone"]]:
    """Decorator: register a backbone factory under ``name`` (default: the function's name).

    With ``argument`` (e.g. ``"NAME"``) it registers a scheme: ``name:ARGUMENT`` specs
    call ``factory(argument, **options)``. ``options`` lists the options the factory
    takes besides :data:`COMMON_OPTIONS` (others are refused); leave it None to pass
    every option on. ``fixed_weights`` says why ``--weights`` and ``--random-weights``
    do not apply (the factory always loads the same weights). Returns the factory
    unchanged.
    """
    if modality not in ("image", "text", "any"):
        raise ValueError(f"modality must be 'image', 'text' or 'any'; got {modality!r}.")

    def decorate(factory: Callable[..., "Backbone"]) -> Callable[..., "Backbone"]:
        key = check_name(factory.__name__ if name is None else name, "backbone")
        _REGISTRY.add(BackboneEntry(
            name=key, factory=factory, modality=modality, description=description,
            install=install, argument=argument, argument_help=argument_help, example=example,
            local_folder=local_folder, options=None if options is None else tuple(options),
            fixed_weights=fixed_weights))
        return factory

    return decorate


def unregister_backbone(name: str) -> BackboneEntry:
    """Remove a registered name or scheme (KeyError if it is not registered)."""
    return _REGISTRY.remove(name)


def list_backbones(pattern: str | Iterable[str] | None = None, *,
                   exclude: str | Iterable[str] | None = None, schemes: bool = True) -> list[str]:
    """Registered backbone names and scheme forms (``timm:NAME``), in registration
    order, filtered by fnmatch ``pattern``(s) like ``timm.list_models('*resnet*')``."""
    return [e.spec for e in backbone_entries(pattern, exclude=exclude)
            if schemes or not e.scheme]


def backbone_entries(pattern: str | Iterable[str] | None = None, *,
                     exclude: str | Iterable[str] | None = None) -> list[BackboneEntry]:
    """The entries behind :func:`list_backbones`; a pattern matches the name (``timm``)."""
    return _REGISTRY.entries(pattern, exclude)


def named_backbones() -> list[str]:
    """The registered names that are a whole spec (no scheme): the suggestions for typos."""
    return [e.name for e in _REGISTRY if not e.scheme]


def spec_forms() -> str:
    """``a built-in name (a, b), timm:NAME, ... or module:function``: for help and messages."""
    schemes = [e.spec for e in _REGISTRY if e.scheme]
    return (f"a built-in name ({', '.join(named_backbones())}), {', '.join(schemes)} "
            f"or {PLUGIN_FORM}")


def resolve_backbone(spec: str) -> ResolvedBackbone:
    """What ``spec`` names, without importing anything: a registered name, a scheme and
    its argument, or a plugin. Unknown names raise :class:`UnknownBackboneError` with
    the close matches."""
    if not isinstance(spec, str):
        raise UnknownBackboneError(f"A backbone spec is a string; got {spec!r}.")
    text = spec.strip()
    entry = _REGISTRY.get(text) if ":" not in text else None
    if entry is not None and not entry.scheme:
        return ResolvedBackbone(spec=entry.name, entry=entry)
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise UnknownBackboneError(
            f"Unknown backbone {spec!r}.{_REGISTRY.did_you_mean(text, named_backbones())} "
            f"Expected {spec_forms()}.")
    entry = _REGISTRY.get(scheme) if scheme.strip() else None
    if entry is not None and entry.scheme:
        if not rest.strip():
            raise UnknownBackboneError(f"{entry.name}: needs {entry.argument_help or 'an argument'}"
                                       f"{', e.g. ' + entry.example if entry.example else ''}.")
        return ResolvedBackbone(spec=text, entry=entry, argument=rest)
    schemes = ", ".join(e.name for e in _REGISTRY if e.scheme)
    if not all(part.isidentifier() for part in scheme.split(".")):
        raise UnknownBackboneError(
            f"Backbone {text!r}: {scheme!r} is neither a known scheme ({schemes}) nor a module "
            f"name. A plugin is {PLUGIN_FORM}, e.g. my_models:make.")
    if not rest.strip():
        raise UnknownBackboneError(f"Backbone plugin {text!r} names no function after ':'. A "
                                   f"plugin is {PLUGIN_FORM}, e.g. my_models:make.")
    return ResolvedBackbone(spec=text, entry=None, argument=rest.strip(), module=scheme)


def create_backbone(spec: str, **options: Any) -> "Backbone":
    """Build the backbone a spec names; ``options`` go to its factory.

    Common options: ``weights`` (path), ``pretrained`` (bool), ``image_size`` (int),
    ``pooling`` (str); ``None`` counts as not given. Options a backbone would ignore
    are refused (the user would get other features than asked for). Unknown names
    raise :class:`UnknownBackboneError` with close matches.
    """
    return resolve_backbone(spec).create(**options)


# -- creating ---------------------------------------------------------------------------
def _check_weights(options: dict[str, Any], what: str, why: str | None) -> None:
    """Refuse weight options a backbone would ignore: the user would get other features."""
    if why is None:
        return
    if options.get("weights") is not None:
        raise ConfigError(f"--weights does not apply to {what}: {why}. Leave it out.")
    if options.get("pretrained") is False:
        raise ConfigError(f"--random-weights does not apply to {what}: {why}. Leave it out.")


def _only(options: dict[str, Any], names: tuple[str, ...] | None, what: str) -> dict[str, Any]:
    """The options the factory takes; any other than the common ones is refused."""
    if names is None:
        api = sorted(set(options) & set(API_OPTIONS))
        if api:
            raise ConfigError(f"Options {api} apply to embedding APIs (openai:MODEL), not to "
                              f"{what}. Leave them out.")
        return options
    extra = set(options) - set(names) - set(COMMON_OPTIONS)
    if extra:
        takes = f"it takes {', '.join(names)}" if names else "it takes none"
        raise ConfigError(f"Options {sorted(extra)} do not apply to {what} ({takes}).")
    return {k: v for k, v in options.items() if k in names}


def _is_featstore(factory: Callable[..., Any]) -> bool:
    return getattr(factory, "__module__", "").split(".")[0] == "featstore"


def _create_entry(entry: BackboneEntry, argument: str | None, options: dict[str, Any],
                  spec: str) -> "Backbone":
    what = f"{entry.name}: backbones" if entry.scheme else entry.name
    _check_weights(options, what, entry.fixed_weights)
    given = _only(options, entry.options, what)
    args = (argument,) if entry.scheme else ()
    if _is_featstore(entry.factory):  # featstore's own: their errors are featstore errors
        return entry.factory(*args, **given)
    return _checked(_call(entry.factory, spec, args, given), spec)


def _create_plugin(module: str, attr: str, options: dict[str, Any]) -> "Backbone":
    """``module:function``: import the module, then call the factory it registered under
    that name, or the function itself; check what it returned.

    Whatever goes wrong in the plugin's own code (an import that raises, a factory that
    raises or exits) becomes one :class:`BackboneError` naming the plugin; its own
    featstore errors pass through as they are.
    """
    from featstore.backbones._weights import one_line

    spec = f"{module}:{attr}"
    schemes = ", ".join(e.name for e in _REGISTRY if e.scheme)
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise UnknownBackboneError(
            f"Backbone plugin {spec}: cannot import module {module!r} ({one_line(err)}). "
            f"Known schemes are {schemes}; for a plugin, make the module importable "
            "(pip install it or add its folder to PYTHONPATH)."
        ) from err
    except (Exception, SystemExit) as err:  # the module's own code failed while importing
        raise BackboneError(f"Backbone plugin {spec}: importing {module!r} raised "
                            f"{type(err).__name__}: {one_line(err)}. Fix the module.") from err
    factory = getattr(mod, attr, None)
    registered = _registered_by(module, attr, factory)
    if registered is not None:
        return _create_entry(registered, None, options, spec)
    if not callable(factory):
        raise UnknownBackboneError(f"Backbone plugin: module {module!r} has no callable {attr!r}.")
    return _checked(_call(factory, spec, (), options), spec)


def _registered_by(module: str, attr: str, factory: Any) -> BackboneEntry | None:
    """The named entry a plugin module registered as ``attr``, or for the function ``attr``."""
    for entry in _REGISTRY:
        if entry.scheme or getattr(entry.factory, "__module__", None) != module:
            continue
        if entry.factory is factory or entry.name == normalize(attr):
            return entry
    return None


def _call(factory: Callable[..., Any], spec: str, args: tuple[Any, ...],
          options: dict[str, Any]) -> Any:
    try:
        return factory(*args, **options)
    except FeatstoreError:
        raise
    except (Exception, SystemExit) as err:
        from featstore.backbones._weights import one_line

        name = getattr(factory, "__name__", "factory")
        hint = (f" A factory takes the options as keywords (def {name}(**options)); it was "
                f"given {sorted(options)}." if isinstance(err, TypeError) else "")
        raise BackboneError(f"Backbone plugin {spec} failed: {type(err).__name__}: "
                            f"{one_line(err)}.{hint}") from err


def _checked(backbone: Any, spec: str) -> "Backbone":
    from featstore.backbones._base import Backbone

    if not isinstance(backbone, Backbone):
        raise UnknownBackboneError(
            f"Backbone plugin {spec} returned {type(backbone).__name__}; it must return "
            "a featstore.backbones.Backbone (see docs/extract.md, 'Plugins')."
        )
    modality = getattr(backbone, "modality", None)
    if not isinstance(getattr(backbone, "id", None), str) or modality not in ("image", "text"):
        raise BackboneError(f"Backbone plugin {spec} returned a backbone without a string 'id' "
                            "or with a modality other than 'image' or 'text'.")
    return backbone

