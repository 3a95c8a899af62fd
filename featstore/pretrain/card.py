"""The model card `featstore pretrain` writes beside its weights (``NAME.json`` beside
``NAME.safetensors``), and its reading by `featstore extract --weights`.

The card carries the provenance of the weights (architecture, data fingerprint, label
noise, epochs, clean validation accuracy) into every feature set made from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BackboneError

CARD_FORMAT = "featstore-model-card/1"
# what a feature set's metadata keeps of a card (not the per-epoch history)
PROVENANCE_KEYS = ("format", "architecture", "num_classes", "classes", "dataset", "noise",
                   "epochs", "clean_val_accuracy", "weights_sha256", "preprocessing", "seed")


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def read_card_beside(weights: str | Path, architecture: str) -> dict[str, Any] | None:
    """The card beside ``weights`` if there is one, checked against ``architecture``."""
    path = card_path(weights)
    if not path.is_file():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BackboneError(f"{path} (the model card beside {Path(weights).name}) is not "
                            f"readable JSON: {err}. Remove it or restore it.") from err
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        return None  # some other JSON file: not ours
    if card.get("architecture") != architecture:
        raise BackboneError(
            f"{Path(weights).name} was trained as {card.get('architecture')} (its model card "
            f"{path.name} says so) but the backbone asked for is {architecture}. Use "
            f"--backbone {card.get('architecture')}.")
    return {k: card[k] for k in PROVENANCE_KEYS if k in card}
