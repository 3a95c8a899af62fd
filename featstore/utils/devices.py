"""``--device auto|cpu|cuda|cuda:N`` parsing."""

from __future__ import annotations

import torch

from featstore.errors import ConfigError


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` is the first CUDA device when one is present, else the CPU."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise ConfigError(
            f"The 'device' option must be auto, cpu, cuda or cuda:N. Got {spec!r} instead."
        ) from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"--device {spec} asks for a GPU, but torch sees no CUDA device here. "
            "Use --device auto (or cpu)."
        )
    return device
