"""Is the model behind a backbone spec still the one that computed a feature set?

Hashed weights in the content key pin most models. An HTTP API's model is only a name:
a service restarted with another checkpoint or another pooling answers under the same
name and dimension, and a resumed feature set would silently hold two models' rows
under one key. Such backbones return a :meth:`~featstore.backbones.Backbone.fingerprint`
(their embedding of a fixed probe input); extraction stores it with a new feature set
and checks this run's against it before resuming the set, and, with ``check_model``,
before reusing a complete one.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from featstore.errors import ModelChangedError

if TYPE_CHECKING:
    from featstore.backbones import Backbone

log = logging.getLogger(__name__)

#: The metadata field holding the fingerprint of the model that computed the set.
FINGERPRINT = "model_fingerprint"


def check_same_model(backbone: "Backbone", metadata: dict[str, Any], path: Any,
                     chunks: list[int] | None = None) -> None:
    """Raise :class:`ModelChangedError` when ``backbone``'s model is not the one whose
    fingerprint ``metadata`` holds. ``chunks``: the committed chunks of a set about to
    be resumed; None for a complete set about to be reused. One probe for backbones
    with a fingerprint; nothing for the others."""
    live = backbone.fingerprint()
    if live is None:
        return  # the key pins the model (hashed weights)
    stored = metadata.get(FINGERPRINT)
    if stored is None and chunks is not None:
        log.warning("%s was written before featstore fingerprinted the model behind %s: "
                    "resuming it without checking that the model is unchanged", path,
                    backbone.id)
        return
    if stored is None:
        raise ModelChangedError(
            f"{path} was written before featstore fingerprinted the model behind "
            f"{backbone.id}, so it cannot be checked against the model served now. Extract "
            "it again with --force, or leave out --check-model to reuse it unchecked.")
    why = backbone.fingerprint_mismatch(stored, live)
    if why is None:
        return
    if chunks is not None:
        raise ModelChangedError(
            f"The model behind {backbone.id} changed since chunks {ranges(chunks)} of {path} "
            f"were written: {why}. Resuming would store two models' embeddings under one "
            "key. Use --force to extract the set again with the model served now, or serve "
            "the former model again and rerun to resume.")
    raise ModelChangedError(
        f"The model behind {backbone.id} is no longer the one that computed the cached "
        f"feature set {path}: {why}. Use --force to extract it again with the model served "
        "now, or serve the former model again.")


def ranges(numbers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans) or "none"
