"""timm image models: ``timm:NAME``, with hub, local or random weights."""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from featstore.errors import BackboneError, UnknownBackboneError
from featstore.backbones._base import Backbone
from featstore.backbones._speed import ForwardOptions
from featstore.backbones._weights import match_state_dict, read_state_dict, state_dict_sha256

log = logging.getLogger(__name__)


def check_model_name(name: str) -> None:
    """:class:`UnknownBackboneError`, with close names, unless timm knows ``name``."""
    import timm

    if not name.strip():
        raise UnknownBackboneError("timm: needs a model name, e.g. timm:resnet50 (list them with "
                                   "`python -c \"import timm; print(timm.list_models())\"`).")
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownBackboneError(
        f"timm has no model named {name!r}.{hint} List them with "
        "`python -c \"import timm; print(timm.list_models('*PATTERN*'))\"`."
    )


def _create(name: str, pooling: str | None, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model`` with its option errors (an unknown pooling, ...) made clear."""
    import timm

    try:
        return timm.create_model(name, **kwargs)
    except (AssertionError, ValueError, TypeError, KeyError) as err:
        what = f"pooling {pooling!r}" if pooling else "these options"
        raise BackboneError(f"timm cannot build {name} with {what}: {err}. Pooling is one of "
                            "avg, max, avgmax, catavgmax, token (ViTs), or leave it out.") from err


class TimmBackbone(Backbone):
    """A timm model cut at its pre-logits features (``forward_head(pre_logits=True)``).

    Parameters
    ----------
    name : str
        timm model name, e.g. ``resnet50``.
    weights : str or Path, optional
        A ``.safetensors`` file or a torch state dict (read with ``weights_only=True``).
        Key names may differ from timm's if the tensors pair by position.
    pretrained : bool
        Without ``weights``: download timm's pre-trained weights (needs the internet),
        or, if False, use random weights seeded by ``seed`` (for tests and baselines).
    image_size : int, optional
        Override the model's input resolution (the crop keeps the model's crop ratio).
    pooling : str, optional
        timm ``global_pool`` (``avg``, ``max``, ``avgmax``, ``token`` for ViTs, ...).
    """

    modality = "image"

    def __init__(self, name: str, *, weights: str | Path | None = None, pretrained: bool = True,
                 image_size: int | None = None, pooling: str | None = None, seed: int = 0,
                 display_id: str | None = None):
        import timm

        check_model_name(name)
        self.name = name
        kwargs: dict[str, Any] = {}
        if pooling:
            kwargs["global_pool"] = pooling
        self.model_card = None
        if weights is not None:
            from featstore.backbones.card import read_card_beside

            self.model_card = read_card_beside(weights, f"timm:{name}")
            if self.model_card:  # weights made by `featstore pretrain`: its head size
                kwargs["num_classes"] = self.model_card["num_classes"]
            self.model = _create(name, pooling, pretrained=False, **kwargs)
            loaded = read_state_dict(weights)
            state, how = match_state_dict(self.model, loaded, str(weights))
            try:
                self.model.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise BackboneError(f"{weights} does not load into {name}: {err}") from err
            source = f"file:{Path(weights).name} ({how})"
        elif pretrained:
            try:
                self.model = timm.create_model(name, pretrained=True, **kwargs)
            except Exception as err:  # hub errors come in many types
                raise BackboneError(
                    f"Could not fetch pre-trained weights for timm:{name} ({type(err).__name__}: "
                    f"{str(err)[:200]}). Without internet access, pass --weights PATH to a local "
                    "safetensors/state-dict file, or --random-weights for a random baseline."
                ) from err
            source = f"timm-hub:{self.model.pretrained_cfg.get('hf_hub_id') or name}"
        else:
            torch.manual_seed(seed)
            self.model = _create(name, pooling, pretrained=False, **kwargs)
            source = f"random(seed={seed})"
        self.model.eval().requires_grad_(False)
        self.weights_sha256 = state_dict_sha256(self.model.state_dict())
        if self.model_card and self.model_card.get("weights_sha256") not in (None, self.weights_sha256):
            raise BackboneError(
                f"{Path(str(weights)).name} does not match its model card "
                f"{Path(str(weights)).with_suffix('.json').name} (the card describes weights "
                f"with sha256 {self.model_card['weights_sha256'][:12]}…, these are "
                f"{self.weights_sha256[:12]}…): the card's provenance would be wrong. Put the "
                "card that came with these weights beside them, or remove it.")
        self.weights_source = source
        cfg = timm.data.resolve_model_data_config(self.model)
        if self.model_card:  # the preprocessing the weights were trained with
            pre = self.model_card["preprocessing"]
            size = int(pre["image_size"])
            cfg.update(input_size=(cfg["input_size"][0], size, size), crop_pct=pre["crop_pct"],
                       mean=tuple(pre["mean"]), std=tuple(pre["std"]),
                       interpolation=pre["interpolation"])
        if image_size:
            cfg["input_size"] = (cfg["input_size"][0], int(image_size), int(image_size))
        self.data_config = cfg
        self.pooling = str(getattr(self.model, "global_pool", None) or pooling or "model-default")
        if hasattr(self.model, "global_pool") and not isinstance(self.model.global_pool, str):
            self.pooling = getattr(self.model.global_pool, "pool_type", None) or pooling or "avg"
        self.id = display_id or f"timm:{name}"
        self.device = torch.device("cpu")
        self.channels_last = prefers_channels_last(self.model)
        self.model.to(memory_format=self.memory_format)
        self._speed = ForwardOptions(self._forward)
        with torch.inference_mode():
            probe = torch.zeros((1,) + tuple(cfg["input_size"]))
            self.num_features = int(self._forward(probe).shape[-1])

    def provenance(self) -> dict[str, Any]:
        cfg = self.data_config
        return {
            "id": self.id,
            "architecture": f"timm:{self.name}",
            "weights_sha256": self.weights_sha256,
            "weights_source": self.weights_source,
            **({"model_card": self.model_card} if self.model_card else {}),
            "layer": "pre_logits",
            "pooling": self.pooling,
            "num_features": self.num_features,
            "preprocessing": {
                "input_size": list(cfg["input_size"]),
                "crop_pct": cfg.get("crop_pct"),
                "crop_mode": cfg.get("crop_mode", "center"),
                "interpolation": cfg.get("interpolation"),
                "mean": [float(x) for x in cfg["mean"]],
                "std": [float(x) for x in cfg["std"]],
                "color": "RGB",
            },
        }

    def transform(self, train: bool = False) -> Callable[[Any], Any]:
        import timm.data

        return timm.data.create_transform(**self.data_config, is_training=train)

    def to(self, device: torch.device) -> "TimmBackbone":
        self.device = torch.device(device)
        self.model.to(self.device, memory_format=self.memory_format)
        return self

    @property
    def memory_format(self) -> torch.memory_format:
        """channels-last for convolutional networks, contiguous for the rest (ViTs)."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def configure(self, *, precision: str = "float32", compile: bool = False) -> None:
        self._speed.set(precision, compile, self.device, self.id)

    def settings(self) -> dict[str, Any]:
        return {"memory_format": "channels_last" if self.channels_last else "contiguous",
                "precision": self._speed.precision, "compile": self._speed.compile}

    def collate(self, items: Sequence[Any]) -> torch.Tensor:
        x = torch.stack(list(items))
        if self.channels_last:  # reordered here, in the loader's thread, not in the forward
            x = x.contiguous(memory_format=torch.channels_last)
        # Pinned, so that the copy to the GPU runs asynchronously (non_blocking below).
        return x.pin_memory() if self.device.type == "cuda" else x

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.forward_features(x)
        return self.model.forward_head(x, pre_logits=True)

    def encode(self, batch: torch.Tensor) -> torch.Tensor:
        x = batch.to(self.device, non_blocking=True, memory_format=self.memory_format)
        return self._speed.run(self.device, x).float().cpu()


def prefers_channels_last(model: torch.nn.Module) -> bool:
    """Whether a model runs faster channels-last: one with convolutions beyond a single
    patch embedding (CNNs: ResNets, EfficientNets, ConvNeXts), not a plain ViT, whose
    one convolution is its patch embedding. A rule on the architecture, never a timing,
    so that the same model always runs (and rounds) the same way.
    (benchmarks/results/extract_vs_peers.json, "memory_format": measured per family.)
    """
    convs = sum(isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)
                for m in model.modules())
    return convs > 1
