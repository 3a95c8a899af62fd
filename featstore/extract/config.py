"""Options of one extraction, as one flat dataclass (the CLI fills it from its flags)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

from featstore.errors import ConfigError
from featstore.store.codecs import parse_codec
from featstore.utils.validation import (INF, Boolean, Dict, Interval, ListOf, Options,
                                        OrNone, Text, check, invalid, show)

__all__ = ["DTYPES", "RANGES", "OPTIONAL", "ExtractConfig", "show"]

DTYPES = ("float16", "float32")
#: Precision of the forward pass (float32, or autocast); see docs/extract.md.
PRECISIONS = ("float32", "bfloat16", "float16")

#: The range of every integer option, for every caller: the CLI (its flags say the
#: lower bounds early), config files, the Python API and the extraction service (whose
#: operator may lower the upper bounds: `featstore serve --limits`). Zero and negative
#: values of counts and sizes mean nothing useful, so they are refused everywhere.
RANGES: dict[str, Interval] = {
    "chunk_rows": Interval(int, 1, 1 << 20),
    "batch_size": Interval(int, 1, 1 << 16),
    "views": Interval(int, 1, 1024),
    "image_size": Interval(int, 1, 8192),
    "limit": Interval(int, 1, 2**31 - 1),
    "num_workers": Interval(int, 0, 256),
    "seed": Interval(int, 0, 2**63 - 1),
    "dimensions": Interval(int, 1, 1 << 16),
    "texts_per_request": Interval(int, 1, 1 << 16),
    "concurrency": Interval(int, 1, 1024),
    "max_retries": Interval(int, 0, 100),
    "threads": Interval(int, 1, 1024),
}
#: Integer options that may also be unset (None: the default of the backbone or data).
OPTIONAL = ("image_size", "limit", "num_workers", "dimensions", "texts_per_request",
            "concurrency", "max_retries", "threads")
#: Every option's rule, checked in this order (so the service, which builds an
#: ExtractConfig from a JSON request, needs no checks of its own for these).
RULES = {
    "backbones": ListOf(Text()),
    "datasets": ListOf(Text()),
    "splits": ListOf(Text()),
    "root": Text(paths=True),
    "format": Options("zarr", "hdf5"),
    "dtype": Options(*DTYPES),
    "codec": OrNone(Text()),
    **{name: OrNone(rule) if name in OPTIONAL else rule for name, rule in RANGES.items()},
    "device": Text(),
    "augment": Options("none", "train"),
    "weights": OrNone(Text(paths=True)),
    "pooling": OrNone(Text()),
    **{name: Boolean() for name in ("pretrained", "strict", "force", "progress")},
    "dataset_options": Dict(),
    "lease_seconds": Interval(float, 0, INF, "neither"),
    **{name: OrNone(Interval(float, 0, INF, "neither"))
       for name in ("requests_per_minute", "request_timeout")},
    "check_model": Boolean(),
    "precision": Options(*PRECISIONS),
    **{name: Boolean() for name in ("compile", "length_buckets")},
    "ray": OrNone(Text()),
}


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
    # Embedding APIs (openai:MODEL); None: the backbone's default. Only dimensions
    # changes the values (it is in the key); the rest are recorded in metadata.
    dimensions: int | None = None             # the API's `dimensions` (shortened embeddings)
    texts_per_request: int | None = None      # most texts in one request [256]
    concurrency: int | None = None            # requests in flight at once [4]
    requests_per_minute: float | None = None  # client-side rate limit [none]
    max_retries: int | None = None            # retries of one request [6]
    request_timeout: float | None = None      # seconds to wait for one answer [30]
    check_model: bool = False                 # probe the model behind a cache hit (APIs)
    # Speed (docs/extract.md, "Speed options"). Only a precision other than float32
    # changes the values (it is then in the key); the others are recorded in metadata.
    precision: str = "float32"                # forward pass: float32, or bfloat16/float16 autocast
    compile: bool = False                     # torch.compile the forward pass
    length_buckets: bool = True               # text: batch a chunk's samples by token length
    # Scale-out (docs/scale-out.md). Neither changes the key; both are recorded in the
    # metadata, because torch's thread count can change the last bits of float results.
    ray: str | None = None                    # Ray cluster: auto, HOST:PORT or ray://HOST:PORT
    threads: int | None = None                # torch threads per worker (None: torch's; 1 with ray)

    def __post_init__(self) -> None:
        if isinstance(self.backbones, str):
            self.backbones = [self.backbones]
        if isinstance(self.datasets, str):
            self.datasets = [self.datasets]
        if isinstance(self.splits, str):
            self.splits = [self.splits]
        self.validate()

    def validate(self) -> None:
        if not self.backbones:
            raise invalid("backbone", self.backbones, "given at least once", owner="extract")
        if not self.datasets:
            raise invalid("dataset", self.datasets, "given at least once", owner="extract")
        for name, rule in RULES.items():
            check(name, getattr(self, name), rule, owner="extract")
        self.codec = parse_codec(self.codec)
        if self.views > 1 and self.augment == "none":
            raise ConfigError(
                f"--views {self.views} needs --augment train: without augmentation every view "
                "would be identical."
            )
        if self.ray is not None and self.format != "zarr":
            raise ConfigError(
                "--ray writes Zarr only: an HDF5 file cannot be written by several processes "
                "at once. Drop --format hdf5 (every featstore command reads Zarr), or extract "
                "HDF5 in one process, without --ray.")

    def check_maxima(self, maxima: Mapping[str, int], why: str = "") -> None:
        """Also within these upper bounds (a service's, set by its operator); ``why`` says
        where they come from."""
        for name, high in maxima.items():
            value = getattr(self, name)
            if value is not None:
                check(name, value, Interval(int, RANGES[name].low, high), owner="extract",
                      why=why)

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
