"""Backbones: frozen feature extractors, created from a spec string.

=====================  ==============================================================
spec                   what it loads
=====================  ==============================================================
``timm:NAME``          a timm image model (hub weights, ``weights=PATH``, or random)
``hf:PATH``            a Hugging Face text encoder folder (BERT, RoBERTa, GPT-2 style)
``st:PATH``            a sentence-transformers folder
``openai:MODEL``       an OpenAI-compatible embeddings HTTP API
``module:function``    a plugin: ``function(**options)`` returns a :class:`Backbone`
built-in names         ``efficientnet-lite0``, ``all-minilm-l6-v2`` (installed from PyPI)
=====================  ==============================================================
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from featstore.errors import BackboneError, ConfigError, FeatstoreError, UnknownBackboneError
from featstore.backbones._base import Backbone
from featstore.backbones._weights import one_line, state_dict_sha256
from featstore.backbones.builtin import BUILTINS
from featstore.backbones.provenance import backbone_key_inputs

__all__ = ["Backbone", "backbone_key_inputs", "state_dict_sha256", "create_backbone", "list_backbones", "SCHEMES"]

SCHEMES = ("timm", "hf", "st", "openai")


def list_backbones() -> list[dict[str, str]]:
    """Built-in names and spec schemes, with what each needs."""
    rows = [{"name": n, "modality": m, "description": d, "install": i}
            for n, (_, m, d, i) in BUILTINS.items()]
    rows += [
        {"name": "timm:NAME", "modality": "image", "description": "any timm model", "install": ""},
        {"name": "hf:PATH", "modality": "text", "description": "transformers encoder folder",
         "install": "pip install 'featstore[text]'"},
        {"name": "st:PATH", "modality": "text", "description": "sentence-transformers folder",
         "install": "pip install 'featstore[text]'"},
        {"name": "openai:MODEL", "modality": "text",
         "description": "OpenAI-compatible embeddings API (key from $OPENAI_API_KEY)", "install": ""},
        {"name": "module:function", "modality": "any", "description": "plugin", "install": ""},
    ]
    return rows


def create_backbone(spec: str, **options: Any) -> Backbone:
    """Build the backbone a spec names; ``options`` go to its constructor.

    Common options: ``weights`` (path), ``pretrained`` (bool), ``image_size`` (int),
    ``pooling`` (str). Unknown names raise :class:`UnknownBackboneError` with close
    matches.
    """
    options = {k: v for k, v in options.items() if v is not None}
    name = spec.strip()
    lowered = name.lower().replace("_", "-")
    if lowered == "efficientnet-lite0":
        _no_weights(options, lowered, "it always loads its packaged ImageNet weights; for other "
                    "weights use --backbone timm:tf_efficientnet_lite0 --weights FILE (or "
                    "--random-weights)")
    elif lowered in BUILTINS:
        _no_weights(options, lowered, "it always loads its packaged model")
        _only(options)
    if lowered in BUILTINS:
        return BUILTINS[lowered][0](**options)
    scheme, sep, rest = name.partition(":")
    if not sep:
        close = difflib.get_close_matches(lowered, list(BUILTINS), n=3, cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise UnknownBackboneError(
            f"Unknown backbone {spec!r}.{hint} Expected a built-in name "
            f"({', '.join(BUILTINS)}) or a spec timm:NAME, hf:PATH, st:PATH, openai:MODEL "
            "or module:function."
        )
    if scheme == "timm":
        from featstore.backbones.timm_backbone import TimmBackbone

        return TimmBackbone(rest, **options)
    if scheme == "hf":
        from featstore.backbones.hf_text import HFTextBackbone

        _no_weights(options, "hf: backbones", "the model folder holds the weights")
        return HFTextBackbone(rest, **_only(options, "pooling", "max_length", "layer"))
    if scheme == "st":
        from featstore.backbones.sentence_transformers import SentenceTransformerFolder

        _no_weights(options, "st: backbones", "the model folder holds the weights")
        _only(options)  # its pooling and length come from the folder
        return SentenceTransformerFolder(rest)
    if scheme == "openai":
        from featstore.backbones.openai_api import OpenAIEmbeddings

        _no_weights(options, "openai: backbones", "the service computes the embeddings")
        return OpenAIEmbeddings(rest, **_only(options, "base_url", "batch_size", "dimensions",
                                              "requests_per_minute", "max_retries"))
    return _plugin(scheme, rest, options)


def _no_weights(options: dict[str, Any], what: str, why: str) -> None:
    """Refuse weight options a backbone would ignore: the user would get other features."""
    if options.get("weights") is not None:
        raise ConfigError(f"--weights does not apply to {what}: {why}. Leave it out.")
    if options.get("pretrained") is False:
        raise ConfigError(f"--random-weights does not apply to {what}: {why}. Leave it out.")


def _only(options: dict[str, Any], *names: str) -> dict[str, Any]:
    extra = set(options) - set(names) - {"weights", "pretrained", "image_size", "seed"}
    if extra:
        raise ConfigError(f"Options {sorted(extra)} do not apply to this backbone.")
    return {k: v for k, v in options.items() if k in names}


def _plugin(module: str, attr: str, options: dict[str, Any]) -> Backbone:
    """``module:function``: import the module, call the factory, check what it returned.

    Whatever goes wrong in the plugin's own code (an import that raises, a factory that
    raises or exits) becomes one :class:`BackboneError` naming the plugin; its own
    featstore errors pass through as they are.
    """
    spec = f"{module}:{attr}"
    if not all(part.isidentifier() for part in module.split(".")):
        raise UnknownBackboneError(
            f"Backbone {spec!r}: {module!r} is neither a known scheme ({', '.join(SCHEMES)}) nor "
            "a module name. A plugin is module:function, e.g. my_models:make.")
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise UnknownBackboneError(
            f"Backbone plugin {spec}: cannot import module {module!r} ({one_line(err)}). "
            f"Known schemes are {', '.join(SCHEMES)}; for a plugin, make the module importable "
            "(pip install it or add its folder to PYTHONPATH)."
        ) from err
    except (Exception, SystemExit) as err:  # the module's own code failed while importing
        raise BackboneError(f"Backbone plugin {spec}: importing {module!r} raised "
                            f"{type(err).__name__}: {one_line(err)}. Fix the module.") from err
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise UnknownBackboneError(f"Backbone plugin: module {module!r} has no callable {attr!r}.")
    try:
        backbone = factory(**options)
    except FeatstoreError:
        raise
    except (Exception, SystemExit) as err:
        hint = (f" A factory takes the options as keywords (def {attr}(**options)); it was "
                f"given {sorted(options)}." if isinstance(err, TypeError) else "")
        raise BackboneError(f"Backbone plugin {spec} failed: {type(err).__name__}: "
                            f"{one_line(err)}.{hint}") from err
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
