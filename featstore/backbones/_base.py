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

    def sample_lengths(self, samples: Any, rows: Sequence[int]) -> list[int] | None:
        """The length (a text's token count) of each of ``rows`` of the sample set
        ``samples``, so that a chunk's samples of similar length share a batch and each
        batch pads only to its own longest; None (the default) for fixed-size inputs
        such as images, which are batched in row order.

        Must depend on the samples only (never on timing or state): the same chunk
        must be batched the same way on every run, resume and engine.
        """
        return None

    def configure(self, *, precision: str = "float32", compile: bool = False) -> None:
        """Set how :meth:`encode` computes: ``precision`` of the forward pass
        (``float32``, or autocast to ``bfloat16``/``float16``) and ``compile``
        (``torch.compile``). Called before every extraction; a backbone that cannot
        honour a setting raises :class:`~featstore.errors.ConfigError` saying what
        it supports. Which memory format and precision it chose go in :meth:`settings`.
        """
        from featstore.errors import ConfigError

        if precision != "float32" or compile:
            raise ConfigError(f"{self.id} computes in its own precision: --precision "
                              f"{precision}{' and --compile' if compile else ''} do not apply "
                              "to it. Leave them out (float32, no compile).")

    def settings(self) -> dict[str, Any]:
        """How it runs where that leaves the values alone (an API's concurrency, timeouts),
        as JSON-able data: recorded in a feature set's metadata, never in its key."""
        return {}

    def fingerprint(self) -> dict[str, Any] | None:
        """What the model computes now on a fixed probe input, as JSON-able data; None
        (the default) when :meth:`provenance` already pins the model (hashed weights).

        A backbone whose model can change behind an unchanged name (an HTTP API)
        returns one: extraction stores it with a new feature set, compares it with
        :meth:`fingerprint_mismatch` before resuming one (and, when asked, before
        reusing a complete one), and refuses to mix two models under one key.
        """
        return None

    def fingerprint_mismatch(self, stored: dict[str, Any], live: dict[str, Any]) -> str | None:
        """Why ``live`` (this run's :meth:`fingerprint`) is not the model that computed
        ``stored``, or None when it is. Compare with a tolerance for float noise."""
        return None if stored == live else "its fingerprint differs"


def _identity(x: Any) -> Any:
    return x
