"""`featstore noise`: a noisy copy of a manifest, with the clean values kept beside."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from featstore.utils import keys
from featstore.errors import ConfigError, DataError, NotFoundError
from featstore.data.noise import ALL_KINDS, add_label_noise, caption_swap, check_ratio
from featstore.utils.outputs import check_output_file
from featstore.utils.atomic import atomic_open, atomic_write
from featstore.utils.validation import INF, Interval, Options, check
from featstore.data.sources import IMAGE_COLUMNS, MANIFEST_SUFFIXES, TEXT_COLUMNS
from featstore.data.tables import check_encoding, read_rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The manifest, whole or not at all: never a half-written one under its name."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import csv

        with atomic_open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    elif suffix == ".jsonl":
        with atomic_open(path, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")
    else:
        import pandas as pd

        with atomic_open(path, "wb") as f:
            pd.DataFrame(rows).to_parquet(f, index=False)


def _float_strings(values: list[Any]) -> bool:
    """CSV labels like "0.37": numbers that are not integers."""
    try:
        return any(not float(v).is_integer() for v in values if isinstance(v, str))
    except ValueError:
        return False  # class names


def write_noisy_manifest(src: str | Path, out: str | Path, *, ratio: float,
                         kind: str = "symmetric", seed: int = 0,
                         label_column: str = "label", text_column: str | None = None,
                         transition: dict[str, str] | None = None, split: str = "train",
                         force: bool = False, encoding: str | None = None) -> dict[str, Any]:
    """Write ``out``: the rows of ``src`` with noisy labels (or captions), the clean value
    in ``clean_<column>`` and an ``is_noisy`` column; plus ``out.noise.json`` (provenance).

    A manifest with a ``split`` column gets noise in the rows of ``split`` only (test
    rows stay clean). Relative image paths are rewritten for ``out``'s folder.
    ``encoding``: of a CSV/TSV/JSONL ``src`` (default UTF-8, BOM-aware); ``out`` is
    always UTF-8. Returns the provenance record."""
    src, out = Path(src), Path(out)
    check_ratio(ratio)
    check("seed", seed, Interval(int, 0, INF, "left"), noun="parameter")
    check("kind", kind, Options(*ALL_KINDS), noun="parameter")
    if not src.is_file():
        raise NotFoundError(f"No manifest at {src}: expected a {'/'.join(MANIFEST_SUFFIXES)} file.")
    if src.suffix.lower() not in MANIFEST_SUFFIXES or out.suffix.lower() not in MANIFEST_SUFFIXES:
        raise DataError(f"Manifests are {', '.join(MANIFEST_SUFFIXES)} files; got {src.name} -> {out.name}.")
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the input manifest; featstore noise never overwrites "
                          "its input. Give another path.")
    if transition and kind != "pairflip":
        raise ConfigError("--transition applies to --kind pairflip only.")
    if text_column and kind != "caption-swap":
        raise ConfigError("--text-column applies to --kind caption-swap only; label noise uses "
                          "--label-column.")
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a manifest file path, e.g. "
                          f"{out / ('noisy' + src.suffix)}.")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it, or give another --out.")
    check_output_file(out, "--out", "noisy" + src.suffix)
    check_output_file(Path(str(out) + ".noise.json"), "The provenance file of --out")
    check_encoding(encoding)
    rows = read_rows(src, encoding)
    if not rows:
        raise DataError(f"{src} has no rows.")
    columns = list(rows[0])
    target = list(range(len(rows)))
    if "split" in columns:
        target = [i for i, r in enumerate(rows) if str(r.get("split")) == split]
        if not target:
            present = sorted({str(r.get("split")) for r in rows})
            raise DataError(f"{src} has no rows with split {split!r}; its splits are {present}. "
                            "Choose one with --split.")
    if kind == "caption-swap":
        column = text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
        if column is None or column not in columns:
            raise DataError(f"{src} has no caption column ({text_column or ' / '.join(TEXT_COLUMNS)}); "
                            f"its columns are {columns}. Name it with --text-column.")
        values = [rows[i][column] for i in target]
        noisy, changed = caption_swap(values, ratio, seed=seed)
    else:
        column = label_column
        if column not in columns:
            raise DataError(f"{src} has no label column {column!r}; its columns are {columns}. "
                            "Name it with --label-column.")
        values = [rows[i][column] for i in target]
        if any(v is None or v == "" for v in values):
            raise DataError(f"{src}: some rows have no {column!r}; label noise needs every label.")
        if any(isinstance(v, float) and not float(v).is_integer() for v in values) or \
                _float_strings(values):
            raise DataError(f"{src} column {column!r} holds regression targets (floats); label "
                            "noise flips class labels.")
        noisy, changed = add_label_noise(np.asarray(values, dtype=object), ratio, kind,
                                         seed=seed, transition=transition)
    if f"clean_{column}" in columns or "is_noisy" in columns:
        raise DataError(f"{src} already has clean_{column}/is_noisy columns: it looks noisy "
                        "already. Start from the clean manifest.")
    new = dict(zip(target, zip(noisy.tolist(), changed.tolist())))
    images = [c for c in IMAGE_COLUMNS if c in columns]
    out_rows = []
    for i, r in enumerate(rows):
        v, c = new.get(i, (r[column], False))
        row = {**r, column: v, f"clean_{column}": r[column], "is_noisy": int(c)}
        for col in images:  # keep relative image paths pointing at the same files
            p = str(r[col])
            if p and not os.path.isabs(p):
                row[col] = os.path.relpath(src.parent.resolve() / p, out.parent.resolve())
        out_rows.append(row)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_rows(out, out_rows)
    record = {"source": str(src), "source_sha256": keys.file_sha256(src),
              "out": str(out), "kind": kind, "ratio": ratio, "seed": seed, "column": column,
              "transition": transition, "split": split if "split" in columns else None,
              "n": len(rows), "n_target": len(target), "n_noisy": int(changed.sum()),
              "noisy_fraction": float(changed.mean()), "created_at": keys.now_iso(),
              "featstore": keys.library_versions().get("featstore")}
    atomic_write(Path(str(out) + ".noise.json"), json.dumps(record, indent=2))
    return record
