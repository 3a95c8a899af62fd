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

from ..errors import ConfigError, UnknownBackboneError
from ._base import Backbone
from .builtin import BUILTINS

__all__ = ["Backbone", "create_backbone", "list_backbones", "SCHEMES"]

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
        from .timm_backbone import TimmBackbone

        return TimmBackbone(rest, **options)
    if scheme == "hf":
        from .hf_text import HFTextBackbone

        return HFTextBackbone(rest, **_only(options, "pooling", "max_length", "layer"))
    if scheme == "st":
        from .sentence_transformers import SentenceTransformerFolder

        return SentenceTransformerFolder(rest)
    if scheme == "openai":
        from .openai_api import OpenAIEmbeddings

        return OpenAIEmbeddings(rest, **_only(options, "base_url", "batch_size", "dimensions",
                                              "requests_per_minute", "max_retries"))
    return _plugin(scheme, rest, options)


def _only(options: dict[str, Any], *names: str) -> dict[str, Any]:
    extra = set(options) - set(names) - {"weights", "pretrained", "image_size", "seed"}
    if extra:
        raise ConfigError(f"Options {sorted(extra)} do not apply to this backbone.")
    return {k: v for k, v in options.items() if k in names}


def _plugin(module: str, attr: str, options: dict[str, Any]) -> Backbone:
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise UnknownBackboneError(
            f"Backbone plugin {module}:{attr}: cannot import module {module!r} ({err}). "
            f"Known schemes are {', '.join(SCHEMES)}; for a plugin, make the module importable "
            "(pip install it or add its folder to PYTHONPATH)."
        ) from err
    factory = getattr(mod, attr, None)
    if not callable(factory):
        raise UnknownBackboneError(f"Backbone plugin: module {module!r} has no callable {attr!r}.")
    backbone = factory(**options)
    if not isinstance(backbone, Backbone):
        raise UnknownBackboneError(
            f"Backbone plugin {module}:{attr} returned {type(backbone).__name__}; it must return "
            "a featstore.backbones.Backbone (see docs/extract.md, 'Plugins')."
        )
    return backbone
