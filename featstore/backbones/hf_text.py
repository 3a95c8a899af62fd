"""Hugging Face text encoders (BERT, RoBERTa, GPT-2 style): ``hf:PATH``."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import torch

from ..errors import BackboneError, ConfigError, MissingDependencyError
from ._base import Backbone
from ._weights import state_dict_sha256

POOLINGS = ("cls", "mean", "last")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise MissingDependencyError(
            "Text backbones need transformers: pip install 'featstore[text]'."
        ) from err
    transformers.utils.logging.disable_progress_bar()  # featstore shows its own progress
    return transformers


class HFTextBackbone(Backbone):
    """A transformers encoder (``AutoModel``) with CLS, masked-mean or last-token pooling.

    Parameters
    ----------
    path : str
        A local model folder (or a hub name, which needs the internet).
    pooling : {"cls", "mean", "last"}
        ``cls``: the first token (BERT/RoBERTa); ``mean``: the mean over real tokens;
        ``last``: the last real token (GPT-2 style decoders).
    max_length : int
        Tokens kept per text (longer texts are truncated).
    normalize : bool
        L2-normalise each embedding (as sentence-transformers' Normalize module does).
    """

    modality = "text"

    def __init__(self, path: str, *, pooling: str | None = None, max_length: int = 512,
                 normalize: bool = False, layer: int = -1, display_id: str | None = None):
        transformers = _transformers()
        self.path = path
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModel.from_pretrained(path)
        except (OSError, ValueError) as err:
            hint = ("" if Path(path).exists() else
                    " It is not a local folder; hub downloads need the internet. Pass the path "
                    "of a folder saved with save_pretrained().")
            raise BackboneError(f"Cannot load a transformers model from {path!r}: "
                                f"{str(err)[:300]}.{hint}") from err
        self.model.eval().requires_grad_(False)
        decoder = not getattr(self.model.config, "is_encoder_decoder", False) and (
            self.model.config.model_type in ("gpt2", "gpt_neo", "gptj", "llama", "mistral", "qwen2"))
        self.pooling = pooling or ("last" if decoder else "cls")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"The 'pooling' option of hf: backbones must be one of "
                              f"{', '.join(POOLINGS)}. Got {self.pooling!r} instead.")
        if self.tokenizer.pad_token is None:  # GPT-2 has none; padding is masked anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_length = min(max_length, getattr(self.tokenizer, "model_max_length", max_length) or max_length)
        self.normalize, self.layer = normalize, layer
        self.num_features = int(self.model.config.hidden_size)
        self.weights_sha256 = state_dict_sha256(self.model.state_dict())
        self.id = display_id or f"hf:{Path(path).name or path}"
        self.device = torch.device("cpu")

    def provenance(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "architecture": f"hf:{self.model.config.model_type}",
            "weights_sha256": self.weights_sha256,
            "weights_source": str(self.path),
            "layer": self.layer,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "num_features": self.num_features,
            "preprocessing": {
                "tokenizer": type(self.tokenizer).__name__,
                "vocab_size": len(self.tokenizer),
                "max_length": self.max_length,
                "truncation": True,
                "padding_side": self.tokenizer.padding_side,
            },
            "library": {"transformers": importlib.metadata.version("transformers")},
        }

    def to(self, device: torch.device) -> "HFTextBackbone":
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def encode(self, batch: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(batch), padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model(**tokens, output_hidden_states=self.layer != -1)
            hidden = out.last_hidden_state if self.layer == -1 else out.hidden_states[self.layer]
            mask = tokens["attention_mask"].to(hidden.dtype)
            if self.pooling == "cls":
                emb = hidden[:, 0]
            elif self.pooling == "mean":
                emb = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
            else:  # last real token, whichever side the padding is on
                if self.tokenizer.padding_side == "left":
                    emb = hidden[:, -1]
                else:
                    last = mask.sum(1).long() - 1
                    emb = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            if self.normalize:
                emb = torch.nn.functional.normalize(emb, dim=-1)
        return emb.float().cpu()
