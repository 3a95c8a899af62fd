"""Data sets from paths: image folders, manifests, IDX files, numpy arrays, HF datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featstore.errors import DataError, MissingDependencyError
from featstore.data._base import ArraySampleSet, FileSampleSet, SampleSet
from featstore.data.idx import labels_beside, read_idx
from featstore.data.tables import read_rows

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
IMAGE_COLUMNS = ("image", "path", "file", "filepath", "image_path")
TEXT_COLUMNS = ("text", "sentence", "caption", "review")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".parquet")
F32_MAX = float(np.finfo(np.float32).max)


def _labels_from(values: list[Any], where: str, ids: list[str] | None = None
                 ) -> tuple[np.ndarray, list[str] | None, str]:
    """Ints -> classes; strings -> class names (sorted); floats -> regression targets.

    Regression targets must be finite in float32 (the stored dtype): ``inf``, ``1e400``
    or ``1e39`` would train to NaN, so they are refused here, naming the row.
    """
    def row(i: int) -> str:
        return f"row {i + 1} (sample id {ids[i]!r})" if ids else f"row {i + 1}"

    missing = [i for i, v in enumerate(values) if v is None or v == "" or _isnan(v)]
    if missing:
        raise DataError(f"{where}: {len(missing)} rows have no label, the first is "
                        f"{row(missing[0])}. Fill them in, or drop the label column for "
                        "unlabelled data.")
    kinds = {type(v).__name__ for v in values}
    if kinds <= {"int", "int64", "bool"}:
        try:
            return np.asarray(values, dtype=np.int64), None, "classification"
        except OverflowError:
            i = next(i for i, v in enumerate(values) if abs(int(v)) > np.iinfo(np.int64).max)
            raise DataError(f"{where}: the label of {row(i)} does not fit a 64-bit integer. "
                            "Class labels are small integers or names; regression targets "
                            "are floats.") from None
    if kinds <= {"float", "int", "float64", "int64"}:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except OverflowError:  # an int beyond float64
            arr = np.array([float("inf") if abs(v) > 1e308 else v for v in values], dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(arr) | (np.abs(arr) > F32_MAX))
        if len(bad):
            raise DataError(f"{where}: the label of {row(int(bad[0]))} is not a finite float32 "
                            "number (it is inf, or beyond ±3.4e38); regression targets must be "
                            f"finite. Fix or drop that row ({len(bad)} such row(s) in all).")
        if np.all(arr == np.round(arr)) and "float" not in kinds:
            return arr.astype(np.int64), None, "classification"
        return arr.astype(np.float32), None, "regression"
    if kinds == {"str"}:
        as_num = _maybe_numeric([str(v) for v in values])
        if as_num is not None:
            return _labels_from(as_num, where, ids)
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


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and bool(np.isnan(v))


def _pick(columns: list[str], given: str | None, options: tuple[str, ...]) -> str | None:
    if given:
        return given if given in columns else None
    return next((c for c in options if c in columns), None)


def manifest(path: Path, split: str, name: str, *, text_column: str | None = None,
             image_column: str | None = None, label_column: str | None = None,
             id_column: str | None = None, encoding: str | None = None) -> SampleSet:
    """A CSV/TSV/JSONL/Parquet table: image path or text, optional label, id and split.

    ``encoding``: of a CSV/TSV/JSONL file (default UTF-8, with or without a BOM)."""
    rows = read_rows(path, encoding)
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
        labels, classes, task = _labels_from([r.get(lab) for r in rows], f"{path} column {lab!r}",
                                             ids)
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
        labels, classes, task = _labels_from(y.tolist(), f"{path} labels",
                                             [str(i) for i in range(len(x))])
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
    idc = _pick(cols, id_column, ("id",))
    ids = [str(v) for v in ds[idc]] if idc else [str(i) for i in range(len(ds))]
    labels = classes = task = None
    if lab:
        feat = ds.features[lab]
        labels, classes, task = _labels_from(list(ds[lab]), f"{path} column {lab!r}", ids)
        if hasattr(feat, "names"):
            classes = list(feat.names)
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
