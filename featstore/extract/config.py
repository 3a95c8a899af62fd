"""Options of one extraction, as one flat dataclass (the CLI fills it from its flags)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..errors import ConfigError
from ..store.codecs import parse_codec

DTYPES = ("float16", "float32")


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
            return ConfigError(f"The '{name}' option of extract must be {expected}. Got {got!r} instead.")

        if not self.backbones:
            raise bad("backbone", "given at least once", self.backbones)
        if not self.datasets:
            raise bad("dataset", "given at least once", self.datasets)
        if self.format not in ("zarr", "hdf5"):
            raise bad("format", "'zarr' or 'hdf5'", self.format)
        if self.dtype not in DTYPES:
            raise bad("dtype", f"one of {', '.join(DTYPES)}", self.dtype)
        self.codec = parse_codec(self.codec)
        for name in ("chunk_rows", "batch_size", "views"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise bad(name, "an int in [1, inf)", v)
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise bad("num_workers", "an int in [0, inf)", self.num_workers)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise bad("limit", "an int in [1, inf)", self.limit)
        if isinstance(self.lease_seconds, bool) or not isinstance(self.lease_seconds, (int, float)) \
                or self.lease_seconds <= 0:
            raise bad("lease_seconds", "a number of seconds in (0, inf)", self.lease_seconds)
        if self.augment not in ("none", "train"):
            raise bad("augment", "'none' or 'train'", self.augment)
        if self.views > 1 and self.augment == "none":
            raise ConfigError(
                f"--views {self.views} needs --augment train: without augmentation every view "
                "would be identical."
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExtractConfig":
        """Build from a YAML/JSON mapping; unknown keys are an error that lists the known ones."""
        names = {f.name for f in fields(cls)}
        aliases = {"backbone": "backbones", "dataset": "datasets", "split": "splits"}
        data = {aliases.get(k, k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"Unknown keys {unknown} in the extract config. Known keys: {', '.join(sorted(names))}."
            )
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
