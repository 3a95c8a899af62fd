"""Data sets from paths: image folders, manifests, IDX files, numpy arrays, HF datasets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, MissingDependencyError
from ._base import ArraySampleSet, FileSampleSet, SampleSet
from .idx import labels_beside, read_idx

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGE_COLUMNS = ("image", "path", "file", "filepath", "image_path")
TEXT_COLUMNS = ("text", "sentence", "caption", "review")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")


def _labels_from(values: list[Any], where: str) -> tuple[np.ndarray, list[str] | None, str]:
    """Ints -> classes; strings -> class names (sorted); floats -> regression targets."""
    missing = [i for i, v in enumerate(values) if v is None or v == "" or (isinstance(v, float) and np.isnan(v))]
    if missing:
        raise DataError(f"{where}: {len(missing)} rows have no label (first: row {missing[0]}). "
                        "Fill them in, or drop the label column for unlabelled data.")
    kinds = {type(v).__name__ for v in values}
    if kinds <= {"int", "int64", "bool"}:
        return np.asarray(values, dtype=np.int64), None, "classification"
    if kinds <= {"float", "int", "float64", "int64"}:
        arr = np.asarray(values, dtype=np.float64)
        if np.all(arr == np.round(arr)) and "float" not in kinds:
            return arr.astype(np.int64), None, "classification"
        return arr.astype(np.float32), None, "regression"
    if kinds == {"str"}:
        as_num = _maybe_numeric([str(v) for v in values])
        if as_num is not None:
            return _labels_from(as_num, where)
        classes = sorted(set(values))
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[v] for v in values], dtype=np.int64), classes, "classification"
    raise DataError(f"{where}: labels mix types {sorted(kinds)}. Use one type: class ints, "
                    "class names, or float targets.")


def _maybe_numeric(values: list[str]) -> list[Any] | None:
    try:
        return [int(v) for v in values]
    except ValueError:
        pass
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def image_folder(path: Path, split: str, name: str) -> SampleSet:
    """``path/CLASS/*.png``, or ``path/SPLIT/CLASS/*.png`` when split folders exist."""
    subdirs = {p.name for p in _class_folders(path)}
    split_names = subdirs & {"train", "test", "val", "valid", "validation"}
    base = path
    if split_names:
        if split not in subdirs:
            raise DataError(f"{path} has split folders {sorted(split_names)}, not {split!r}. "
                            "Pass one of them with --split.")
        base = path / split
    classes = [p.name for p in _class_folders(base)]
    if not classes:
        raise DataError(f"{base} holds no class folders: expected one subfolder per class "
                        "with the images inside (the ImageFolder layout).")
    paths, labels = [], []
    for c, cdir in enumerate(_class_folders(base)):
        for f in sorted(cdir.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(f)
                labels.append(c)
    if not paths:
        raise DataError(f"{base}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))}) in the class folders.")
    return FileSampleSet(paths=[str(p) for p in paths], name=name, split=split, modality="image",
                         sample_ids=[str(p.relative_to(base)) for p in paths],
                         labels=np.array(labels, dtype=np.int64), classes=classes,
                         source={"kind": "image-folder", "path": str(base)})


def _read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import csv

        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix == ".jsonl":
        rows = []
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(f"{path} line {n} is not JSON: {err}") from err
        return rows
    try:
        import pandas as pd
    except ImportError as err:
        raise MissingDependencyError("Parquet manifests need pandas and pyarrow: "
                                     "pip install 'featstore[tables]'.") from err
    df = pd.read_parquet(path)
    return [{k: (None if _isnan(v) else (v.item() if hasattr(v, "item") else v)) for k, v in r.items()}
            for r in df.to_dict("records")]


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and np.isnan(v)


def _pick(columns: list[str], given: str | None, options: tuple[str, ...]) -> str | None:
    if given:
        return given if given in columns else None
    return next((c for c in options if c in columns), None)


def manifest(path: Path, split: str, name: str, *, text_column: str | None = None,
             image_column: str | None = None, label_column: str | None = None,
             id_column: str | None = None) -> SampleSet:
    """A CSV/TSV/JSONL/Parquet table: image path or text, optional label, id and split."""
    rows = _read_rows(path)
    if not rows:
        raise DataError(f"{path} has no rows.")
    columns = list(rows[0])
    if "split" in columns:
        present = sorted({str(r.get("split")) for r in rows})
        rows = [r for r in rows if str(r.get("split")) == split]
        if not rows:
            raise DataError(f"{path} has no rows with split {split!r}; its splits are {present}.")
    img = _pick(columns, image_column, IMAGE_COLUMNS if not text_column else ())
    txt = _pick(columns, text_column, TEXT_COLUMNS if not image_column else ())
    if (image_column and not img) or (text_column and not txt) or not (img or txt):
        wanted = image_column or text_column or f"one of {', '.join(IMAGE_COLUMNS + TEXT_COLUMNS)}"
        raise DataError(f"{path} has no column {wanted}; its columns are {columns}. Name the "
                        "column with --image-column or --text-column.")
    lab = _pick(columns, label_column, ("label",))
    if label_column and not lab:
        raise DataError(f"{path} has no label column {label_column!r}; its columns are {columns}.")
    idc = _pick(columns, id_column, ("id",))
    if id_column and not idc:
        raise DataError(f"{path} has no id column {id_column!r}; its columns are {columns}.")
    ids = [str(r[idc]) for r in rows] if idc else [str(i) for i in range(len(rows))]
    labels = classes = task = None
    if lab:
        labels, classes, task = _labels_from([r.get(lab) for r in rows], f"{path} column {lab!r}")
    common = dict(name=name, split=split, sample_ids=ids, labels=labels, classes=classes,
                  task=task, source={"kind": "manifest", "path": str(path),
                                     "column": img or txt, "label_column": lab})
    if img:
        paths = [str((path.parent / str(r[img])).resolve()) for r in rows]
        return FileSampleSet(paths=paths, modality="image", **common)
    return ArraySampleSet(data=np.array([str(r[txt]) for r in rows], dtype=object),
                          modality="text", **common)


def idx_files(path: Path, split: str, name: str) -> SampleSet:
    images = read_idx(path)
    lab_path = labels_beside(path)
    labels = read_idx(lab_path).astype(np.int64) if lab_path else None
    if labels is not None and len(labels) != len(images):
        raise DataError(f"{path} holds {len(images)} images but {lab_path} {len(labels)} labels.")
    return ArraySampleSet(data=images, name=name, split=split, modality="image",
                          sample_ids=[str(i) for i in range(len(images))], labels=labels,
                          source={"kind": "idx", "path": str(path), "labels": str(lab_path)})


def numpy_file(path: Path, split: str, name: str) -> SampleSet:
    """``.npz`` with x/X/images/data (+ y/labels) arrays, or a ``.npy`` of images."""
    if path.suffix == ".npy":
        x, y = np.load(path, allow_pickle=False), None
    else:
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            xk = next((k for k in ("x", "X", "images", "data", "texts", "text") if k in keys), None)
            if xk is None:
                raise DataError(f"{path} holds arrays {keys}; expected the samples under x, X, "
                                "images, data or texts (and labels under y or labels).")
            yk = next((k for k in ("y", "labels", "label", "targets") if k in keys), None)
            x, y = z[xk], (z[yk] if yk else None)
    text = x.dtype.kind in "US"
    if not text and (x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[-1] not in (1, 3))):
        raise DataError(f"{path}: expected images of shape (N, H, W) or (N, H, W, 1|3), got {x.shape}.")
    if x.ndim == 4 and x.shape[-1] == 1:
        x = x[..., 0]
    labels = classes = task = None
    if y is not None:
        if len(y) != len(x):
            raise DataError(f"{path}: {len(x)} samples but {len(y)} labels.")
        labels, classes, task = _labels_from(y.tolist(), f"{path} labels")
    return ArraySampleSet(data=x.astype(object) if text else x, name=name, split=split,
                          modality="text" if text else "image",
                          sample_ids=[str(i) for i in range(len(x))], labels=labels,
                          classes=classes, task=task, source={"kind": "numpy", "path": str(path)})


def hf_saved(path: Path, split: str, name: str, *, text_column: str | None = None,
             image_column: str | None = None, label_column: str | None = None,
             id_column: str | None = None) -> SampleSet:
    """A Hugging Face ``datasets`` folder written by ``save_to_disk``."""
    try:
        import datasets
    except ImportError as err:
        raise MissingDependencyError("Reading a saved Hugging Face dataset needs `datasets`: "
                                     "pip install 'featstore[hf-datasets]'.") from err
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise DataError(f"{path} has splits {list(ds)}, not {split!r}.")
        ds = ds[split]
    cols = ds.column_names
    img = _pick(cols, image_column, ("image", "img") if not text_column else ())
    txt = _pick(cols, text_column, TEXT_COLUMNS if not image_column else ())
    if not (img or txt):
        raise DataError(f"{path} has no image or text column; its columns are {cols}. "
                        "Name one with --image-column or --text-column.")
    lab = _pick(cols, label_column, ("label", "labels"))
    labels = classes = task = None
    if lab:
        feat = ds.features[lab]
        labels, classes, task = _labels_from(list(ds[lab]), f"{path} column {lab!r}")
        if hasattr(feat, "names"):
            classes = list(feat.names)
    idc = _pick(cols, id_column, ("id",))
    ids = [str(v) for v in ds[idc]] if idc else [str(i) for i in range(len(ds))]
    common = dict(name=name, split=split, sample_ids=ids, labels=labels, classes=classes,
                  task=task, source={"kind": "hf-datasets", "path": str(path)})
    if img:
        return _HFImages(ds=ds, column=img, modality="image", **common)
    return ArraySampleSet(data=np.array([str(t) for t in ds[txt]], dtype=object),
                          modality="text", **common)


class _HFImages(SampleSet):
    def __init__(self, *, ds: Any, column: str, **kw: Any):
        self._ds, self._column = ds, column
        super().__init__(**kw)

    def load(self, index: int) -> Any:
        return self._ds[index][self._column].convert("RGB")

    def content_bytes(self, index: int) -> bytes:
        return np.asarray(self._ds[index][self._column]).tobytes()
