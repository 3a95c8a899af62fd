"""Reading weight files safely, hashing state dicts, and by-position key remapping."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Mapping

import torch

from ..errors import BackboneError

log = logging.getLogger(__name__)

_SKIP = ("num_batches_tracked",)


def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over sorted tensor names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a torch file with ``weights_only=True``.

    Never unpickles arbitrary objects: a file that needs that is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"Weights file {path} does not exist. Check the --weights path.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise BackboneError(f"{path} is not a readable safetensors file: {err}") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(
            f"{path} cannot be read as a state dict with torch.load(weights_only=True) "
            f"({type(err).__name__}). featstore never unpickles arbitrary objects; save the "
            "weights with torch.save(model.state_dict(), ...) or as .safetensors."
        ) from err
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return obj


def match_state_dict(model: torch.nn.Module, loaded: Mapping[str, torch.Tensor],
                     source: str) -> tuple[dict[str, torch.Tensor], str]:
    """Fit ``loaded`` to ``model``'s key names; return it and how it was matched.

    Names that match are used as they are. Otherwise, when both hold the same number of
    tensors (``num_batches_tracked`` left out) with equal shapes in order, the tensors
    are paired by position: this loads checkpoints of other libraries that implement
    the same architecture (for example ``efficientnet_pytorch`` weights into timm's
    ``tf_efficientnet_lite0``).
    """
    target = model.state_dict()
    loaded = {k.removeprefix("module."): v for k, v in loaded.items()}
    if set(loaded) == set(target):
        return dict(loaded), "by-name"
    tkeys = [k for k in target if not k.endswith(_SKIP)]
    lkeys = [k for k in loaded if not k.endswith(_SKIP)]
    if len(tkeys) == len(lkeys) and all(
        tuple(target[a].shape) == tuple(loaded[b].shape) for a, b in zip(tkeys, lkeys)
    ):
        log.info("%s: key names differ from the model's; paired %d tensors by position",
                 source, len(tkeys))
        out = {a: loaded[b] for a, b in zip(tkeys, lkeys)}
        for k in target:
            if k.endswith(_SKIP):
                out[k] = target[k]
        return out, "by-position"
    missing = sorted(set(target) - set(loaded))[:5]
    unexpected = sorted(set(loaded) - set(target))[:5]
    raise BackboneError(
        f"{source} does not fit the model: it has {len(lkeys)} tensors, the model "
        f"{len(tkeys)}; by name, missing {missing} and unexpected {unexpected}; by position "
        "the shapes differ. Check that --backbone names the architecture these weights "
        "were trained for."
    )
