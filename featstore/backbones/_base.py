"""The contract every backbone meets, whatever runs it (timm, transformers, an HTTP API)."""

from __future__ import annotations

import abc
from typing import Any, Callable, Literal, Sequence

import torch

Modality = Literal["image", "text"]


class Backbone(abc.ABC):
    """A frozen feature extractor.

    The extractor calls, in this order: :meth:`to` once, then for every batch
    ``encode(collate([transform(sample) for sample in batch]))``. ``transform`` runs in
    DataLoader worker processes, so it must be picklable and cheap to send;
    ``encode`` runs in the main process under ``torch.inference_mode``.
    """

    #: Canonical spec, e.g. ``timm:resnet50`` or ``hf:/path/to/bert``; part of the key.
    id: str
    #: "image" or "text": which data sets it accepts.
    modality: Modality
    #: Feature dimension D of one sample.
    num_features: int
    #: True for backbones that call a remote service (no worker processes, no device).
    remote: bool = False

    @abc.abstractmethod
    def provenance(self) -> dict[str, Any]:
        """Everything that determines the features, as JSON-able data.

        Must contain ``weights_sha256`` (or the remote model's name and version),
        ``layer``, ``pooling`` and ``preprocessing``; never secrets.

        The whole of it is stored in a feature set's metadata; the content key hashes it
        without ``id``, ``num_features`` and ``library`` and, when ``weights_sha256`` is
        set, without the location fields ``weights_source``, ``weights_path``, ``path``,
        ``source`` and ``folder`` (:func:`featstore.backbones.backbone_key_inputs`). So hash
        the weights' bytes, not their path, and the same weights installed anywhere
        share one key.
        """

    def transform(self, train: bool = False) -> Callable[[Any], Any]:
        """Per-sample transform: eval preprocessing, or the training augmentation."""
        return _identity

    def collate(self, items: Sequence[Any]) -> Any:
        """Turn transformed samples into one batch input for :meth:`encode`."""
        if items and isinstance(items[0], torch.Tensor):
            return torch.stack(list(items))
        return list(items)

    def to(self, device: torch.device) -> "Backbone":
        """Move weights to ``device`` (no-op for remote backbones)."""
        return self

    @abc.abstractmethod
    def encode(self, batch: Any) -> torch.Tensor:
        """Return features of shape (B, D), float32, on the CPU."""


def _identity(x: Any) -> Any:
    return x
