"""How a local torch backbone runs its forward pass: precision and ``torch.compile``.

Precision changes the stored values (it is part of the content key unless float32);
``compile`` and the memory format change at most the last float bits (recorded in the
metadata only). See docs/extract.md, "Speed options".
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch

from featstore.errors import ConfigError

#: ``--precision``: float32 (exact; the default everywhere) or autocast to a 16-bit type.
PRECISIONS = ("float32", "bfloat16", "float16")


def cpu_has_bfloat16() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 or AMX through oneDNN);
    elsewhere bfloat16 autocast is emulated and slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision: str, device: torch.device, what: str) -> None:
    """A :class:`ConfigError` unless ``precision`` can run on ``device``."""
    if precision not in PRECISIONS:
        raise ConfigError(f"The 'precision' parameter of extract must be one of "
                          f"{', '.join(PRECISIONS)}. Got {precision!r} instead.")
    if device.type == "cuda" or precision == "float32":
        return
    if precision == "float16":
        raise ConfigError(f"--precision float16 needs a CUDA device ({what} runs on "
                          f"{device.type}). On a CPU use --precision bfloat16 (where the CPU "
                          "has it) or float32.")
    if device.type != "cpu" or not cpu_has_bfloat16():
        raise ConfigError(f"--precision bfloat16 needs a CUDA device or a CPU with native "
                          f"bfloat16 (AVX512-BF16 or AMX); {what} runs on {device.type}, which "
                          "has none. Use --precision float32.")


def autocast(precision: str, device: torch.device) -> ContextManager[Any]:
    """The forward pass's autocast context (none for float32)."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=getattr(torch, precision))


class ForwardOptions:
    """A backbone's precision and compile settings and its (maybe compiled) forward."""

    def __init__(self, forward: Callable[..., Any]):
        self.eager = forward
        self.precision = "float32"
        self.compile = False
        self._compiled: Callable[..., Any] | None = None

    def set(self, precision: str, compile: bool, device: torch.device, what: str) -> None:
        check_precision(precision, device, what)
        self.precision, self.compile = precision, bool(compile)

    @property
    def forward(self) -> Callable[..., Any]:
        """The forward to call: compiled on first use with ``compile`` (kept after that)."""
        if not self.compile:
            return self.eager
        if self._compiled is None:
            # dynamic=None: a second shape (the last batch of a chunk, another text
            # length) recompiles once with dynamic sizes instead of once per shape.
            self._compiled = torch.compile(self.eager, dynamic=None)
        return self._compiled

    def run(self, device: torch.device, *args: Any, **kwargs: Any) -> Any:
        with torch.inference_mode(), autocast(self.precision, device):
            return self.forward(*args, **kwargs)
