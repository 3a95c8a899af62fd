"""The model card `featstore pretrain` writes beside its weights (``NAME.json`` beside
``NAME.safetensors``), and its reading by `featstore extract --weights`.

The card carries the provenance of the weights (architecture, data fingerprint, label
noise, epochs, clean validation accuracy) into every feature set made from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from featstore.errors import BackboneError

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
    _check_fields(card, path)
    return {k: card[k] for k in PROVENANCE_KEYS if k in card}


def _check_fields(card: dict[str, Any], path: Path) -> None:
    """The fields extract uses to rebuild the model and its preprocessing, or a clear error."""
    def bad(field: str, expected: str) -> BackboneError:
        return BackboneError(f"{path} (a featstore model card) has no valid {field!r} "
                             f"(expected {expected}). Restore the card `featstore pretrain` "
                             "wrote beside these weights, or remove it.")

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    def numbers(value: Any, n: int) -> bool:
        return (isinstance(value, list) and len(value) == n and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))

    if not positive_int(card.get("num_classes")):
        raise bad("num_classes", "a positive integer")
    pre = card.get("preprocessing")
    if not isinstance(pre, dict):
        raise bad("preprocessing", "an object with image_size, crop_pct, mean, std, interpolation")
    if not positive_int(pre.get("image_size")):
        raise bad("preprocessing.image_size", "a positive integer")
    crop = pre.get("crop_pct")
    if isinstance(crop, bool) or not isinstance(crop, (int, float)) or not 0 < crop <= 1:
        raise bad("preprocessing.crop_pct", "a number in (0, 1]")
    if not numbers(pre.get("mean"), 3) or not numbers(pre.get("std"), 3):
        raise bad("preprocessing.mean/std", "three numbers each")
    if not isinstance(pre.get("interpolation"), str):
        raise bad("preprocessing.interpolation", "a name such as 'bilinear'")
    if not isinstance(card.get("weights_sha256", ""), (str, type(None))):
        raise bad("weights_sha256", "a hex string")


#: Card fields that say where something sat on the machine that trained the weights
#: (the training data's path): kept in metadata, left out of content keys.
LOCATION_FIELDS = (("dataset", "spec"),)


def card_key_fields(card: dict[str, Any]) -> dict[str, Any]:
    """The card as a content key sees it: without :data:`LOCATION_FIELDS`."""
    out = dict(card)
    for parent, child in LOCATION_FIELDS:
        if isinstance(out.get(parent), dict):
            out[parent] = {k: v for k, v in out[parent].items() if k != child}
    return out
