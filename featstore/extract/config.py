"""Options of one extraction, as one flat dataclass (the CLI fills it from its flags)."""

from __future__ import annotations

import math
import reprlib
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from featstore.errors import ConfigError
from featstore.store.codecs import parse_codec

DTYPES = ("float16", "float32")

#: The range of every integer option, for every caller: the CLI (its flags say the
#: lower bounds early), config files, the Python API and the extraction service (whose
#: operator may lower the upper bounds: `featstore serve --limits`). Zero and negative
#: values of counts and sizes mean nothing useful, so they are refused everywhere.
RANGES: dict[str, tuple[int, int]] = {
    "chunk_rows": (1, 1 << 20),
    "batch_size": (1, 1 << 16),
    "views": (1, 1024),
    "image_size": (1, 8192),
    "limit": (1, 2**31 - 1),
    "num_workers": (0, 256),
    "seed": (0, 2**63 - 1),
}
#: Integer options that may also be unset (None: the default of the backbone or data).
OPTIONAL = ("image_size", "limit", "num_workers")


def show(value: Any) -> str:
    """A short repr of a value from a user (a request may hold huge or deeply nested ones)."""
    return _SHORT.repr(value)


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlevel = 80, 80, 3


def check_range(name: str, value: Any, low: int, high: int, *, where: str = "of extract",
                why: str = "") -> None:
    """:class:`ConfigError` unless ``value`` is an int (not a bool) in [low, high]."""
    if isinstance(value, int) and not isinstance(value, bool) and low <= value <= high:
        return
    raise ConfigError(f"The '{name}' option {where} must be an int in [{low}, {high}]{why}. "
                      f"Got {show(value)} instead.")


@dataclass
class ExtractConfig:
    backbones: list[str]                      # backbone specs; each is loaded once
    datasets: list[str]                       # data set names or paths
    splits: list[str] = field(default_factory=lambda: ["train"])  # splits of every data set
    root: str = "features"                    # folder holding the feature sets
    format: str = "zarr"                      # "zarr" (default) or "hdf5"
    dtype: str = "float16"                    # storage dtype (docs/storage.md: why float16)
    codec: str = "zstd"                       # compression of the features array
    chunk_rows: int = 1024                    # rows per stored chunk (the unit of resume)
    batch_size: int = 64                      # samples per forward pass
    device: str = "auto"                      # auto | cpu | cuda | cuda:N
    num_workers: int | None = None            # DataLoader decode workers (None: by device/cores)
    views: int = 1                            # K views per sample (K > 1 needs augment)
    augment: str = "none"                     # "none" or "train" (the backbone's train transform)
    seed: int = 0                             # seeds augmentation and --limit subsets
    weights: str | None = None                # local weights file for the backbone
    pretrained: bool = True                   # False: random weights (baselines, tests)
    image_size: int | None = None             # override the backbone's input resolution
    pooling: str | None = None                # backbone pooling (timm global_pool; cls/mean/last)
    limit: int | None = None                  # use a seeded subset of this many samples
    strict: bool = False                      # fail on the first unreadable sample
    force: bool = False                       # re-extract even when the key is cached
    progress: bool = True                     # progress bar on a terminal
    dataset_options: dict[str, Any] = field(default_factory=dict)  # column names etc.
    lease_seconds: float = 60.0               # a writer's lease on a key; renewed while it runs

    def __post_init__(self) -> None:
        if isinstance(self.backbones, str):
            self.backbones = [self.backbones]
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        if isinstance(self.splits, str):
            self.splits = [self.splits]
        self.validate()

    def validate(self) -> None:
        def bad(name: str, expected: str, got: Any) -> ConfigError:
            return ConfigError(f"The '{name}' option of extract must be {expected}. "
                               f"Got {show(got)} instead.")

        if not self.backbones:
            raise bad("backbone", "given at least once", self.backbones)
        if not self.datasets:
            raise bad("dataset", "given at least once", self.datasets)
        if self.format not in ("zarr", "hdf5"):
            raise bad("format", "'zarr' or 'hdf5'", self.format)
        if self.dtype not in DTYPES:
            raise bad("dtype", f"one of {', '.join(DTYPES)}", self.dtype)
        self.codec = parse_codec(self.codec)
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            if value is None and name in OPTIONAL:
                continue
            check_range(name, value, low, high)
        lease = self.lease_seconds
        if isinstance(lease, bool) or not isinstance(lease, (int, float)) \
                or not math.isfinite(lease) or lease <= 0:
            raise bad("lease_seconds", "a number of seconds in (0, inf)", self.lease_seconds)
        if self.augment not in ("none", "train"):
            raise bad("augment", "'none' or 'train'", self.augment)
        if self.views > 1 and self.augment == "none":
            raise ConfigError(
                f"--views {self.views} needs --augment train: without augmentation every view "
                "would be identical."
            )

    def check_maxima(self, maxima: Mapping[str, int], why: str = "") -> None:
        """Also within these upper bounds (a service's, set by its operator); ``why`` says
        where they come from."""
        for name, high in maxima.items():
            value = getattr(self, name)
            if value is not None:
                check_range(name, value, RANGES[name][0], high, why=why)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractConfig":
        """Build from a YAML/JSON mapping; unknown keys are an error that lists the known ones."""
        names = {f.name for f in fields(cls)}
        aliases = {"backbone": "backbones", "dataset": "datasets", "split": "splits"}
        data = {aliases.get(str(k), str(k)).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"Unknown keys {show(unknown)} in the extract config. Known keys: "
                f"{', '.join(sorted(names))}."
            )
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
