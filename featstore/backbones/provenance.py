"""What of a backbone's provenance names its computation, and so goes into content keys."""

from __future__ import annotations

from typing import Any

from featstore.backbones.card import card_key_fields

#: Provenance fields a content key never holds: a display name, D (it follows from the
#: rest) and library versions (recorded in metadata, like every version).
UNKEYED_FIELDS = ("id", "num_features", "library")
#: Provenance fields that say where the files sit, not what they compute. They are left
#: out of the key whenever ``weights_sha256`` identifies the weights; without such a hash
#: the location is all that tells two weights apart, so it stays (a cache miss is better
#: than a wrong hit).
LOCATION_FIELDS = ("weights_source", "weights_path", "path", "source", "folder")


def backbone_key_inputs(provenance: dict[str, Any]) -> dict[str, Any]:
    """The part of a backbone's provenance that goes into content keys.

    It names the computation (architecture, weights hash, layer, pooling,
    preprocessing, dtype), never where the files sit: the same weights installed at two
    paths give one key, so teammates share one cache.
    """
    out = {k: v for k, v in provenance.items() if k not in UNKEYED_FIELDS}
    if out.get("weights_sha256"):
        for name in LOCATION_FIELDS:
            out.pop(name, None)
    if isinstance(out.get("model_card"), dict):
        out["model_card"] = card_key_fields(out["model_card"])
    return out
