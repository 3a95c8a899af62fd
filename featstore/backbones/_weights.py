"""Reading weight files safely, hashing state dicts, and by-position key remapping."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path
from typing import Iterable, Mapping

import torch

from featstore.errors import BackboneError, WeightsNotFoundError

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

    Never unpickles arbitrary objects: a file that needs that is refused. A safetensors
    file is recognised by its header, whatever its suffix.
    """
    path = Path(path)
    _check_regular_file(path)
    if path.suffix == ".safetensors" or _looks_like_safetensors(path):
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:
            raise BackboneError(f"{path} is not a readable safetensors file "
                                f"({one_line(err)}). It may be truncated: copy it again.") from err
    obj = torch_load_weights_only(path)
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BackboneError(f"{path} does not hold a state dict (a mapping of names to tensors).")
    return obj


def torch_load_weights_only(path: Path) -> object:
    """``torch.load(path, weights_only=True)``, with a refusal that says what to do.

    The weights-only unpickler rebuilds tensors and plain containers and refuses any
    other object, so a pickle with a payload is refused without running it.
    """
    try:
        with warnings.catch_warnings():  # its pickle-protocol notice is not the user's business
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise BackboneError(
            f"{path} cannot be read as weights with torch.load(weights_only=True) "
            f"({type(err).__name__}). featstore never unpickles arbitrary objects: convert the "
            "weights to safetensors (safetensors.torch.save_file(model.state_dict(), ...)) or "
            "save a plain state dict with torch.save(model.state_dict(), ...)."
        ) from err


def _check_regular_file(path: Path) -> None:
    if path.is_dir():
        raise BackboneError(f"{path} is a folder, not a weights file. Pass the .safetensors "
                            "(or .pth state dict) file itself.")
    if not path.exists():
        raise WeightsNotFoundError(f"Weights file {path} does not exist. Check the --weights "
                                   "path.")
    if not path.is_file():
        raise BackboneError(f"{path} is not a regular file (a device or a pipe?). Pass a "
                            ".safetensors or .pth weights file.")
    if path.stat().st_size == 0:
        raise BackboneError(f"{path} is empty: no weights in it. Copy the weights file again.")


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian), then '{'."""
    with open(path, "rb") as f:
        head = f.read(9)
    return (len(head) == 9 and head[8:9] == b"{"
            and 0 < int.from_bytes(head[:8], "little") < path.stat().st_size)


def one_line(err: BaseException, limit: int = 200) -> str:
    """An exception's message on one line, cut to ``limit`` characters."""
    text = " ".join(str(err).split())
    return (text[:limit] + "…") if len(text) > limit else text


def files_sha256(folder: Path, names: Iterable[str]) -> str:
    """sha256 over the sorted relative names, sizes and bytes of files under ``folder``.

    Where the folder sits is not hashed: a byte-identical copy anywhere gives the same
    value, and any change to a name or a byte gives another.
    """
    h = hashlib.sha256()
    for name in sorted(set(names)):
        path = folder / name
        h.update(f"{name}\0{path.stat().st_size}\0".encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


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
