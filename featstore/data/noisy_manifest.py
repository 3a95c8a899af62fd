"""`featstore noise`: a noisy copy of a manifest, with the clean values kept beside."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .. import keys
from ..errors import ConfigError, DataError
from ..noise import ALL_KINDS, add_label_noise, caption_swap, check_ratio
from .sources import MANIFEST_SUFFIXES, TEXT_COLUMNS, _read_rows


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    suffix = path.suffix.lower()
    tmp = path.with_name(path.name + ".partial")
    if suffix in (".csv", ".tsv"):
        import csv

        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t" if suffix == ".tsv" else ",")
            w.writeheader()
            w.writerows(rows)
    elif suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, default=str) + "\n")
    else:
        import pandas as pd

        pd.DataFrame(rows).to_parquet(tmp, index=False)
    tmp.replace(path)  # never a half-written manifest under the final name


def write_noisy_manifest(src: str | Path, out: str | Path, *, ratio: float,
                         kind: str = "symmetric", seed: int = 0,
                         label_column: str = "label", text_column: str | None = None,
                         transition: dict[str, str] | None = None,
                         force: bool = False) -> dict[str, Any]:
    """Write ``out``: the rows of ``src`` with noisy labels (or captions), the clean value
    in ``clean_<column>`` and an ``is_noisy`` column; plus ``out.noise.json`` (provenance).
    Returns that provenance record."""
    src, out = Path(src), Path(out)
    check_ratio(ratio)
    if kind not in ALL_KINDS:
        raise ConfigError(f"The 'kind' parameter must be one of {', '.join(ALL_KINDS)}. "
                          f"Got {kind!r} instead.")
    if not src.is_file():
        raise DataError(f"No manifest at {src}: expected a {'/'.join(MANIFEST_SUFFIXES)} file.")
    if src.suffix.lower() not in MANIFEST_SUFFIXES or out.suffix.lower() not in MANIFEST_SUFFIXES:
        raise DataError(f"Manifests are {', '.join(MANIFEST_SUFFIXES)} files; got {src.name} -> {out.name}.")
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the input manifest; featstore noise never overwrites "
                          "its input. Give another path.")
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it, or give another --out.")
    rows = _read_rows(src)
    if not rows:
        raise DataError(f"{src} has no rows.")
    columns = list(rows[0])
    if kind == "caption-swap":
        column = text_column or next((c for c in TEXT_COLUMNS if c in columns), None)
        if column is None or column not in columns:
            raise DataError(f"{src} has no caption column ({text_column or ' / '.join(TEXT_COLUMNS)}); "
                            f"its columns are {columns}. Name it with --text-column.")
        values = [r[column] for r in rows]
        noisy, changed = caption_swap(values, ratio, seed=seed)
    else:
        column = label_column
        if column not in columns:
            raise DataError(f"{src} has no label column {column!r}; its columns are {columns}. "
                            "Name it with --label-column.")
        values = [r[column] for r in rows]
        if any(v is None or v == "" for v in values):
            raise DataError(f"{src}: some rows have no {column!r}; label noise needs every label.")
        noisy, changed = add_label_noise(np.asarray(values, dtype=object), ratio, kind,
                                         seed=seed, transition=transition)
    if f"clean_{column}" in columns or "is_noisy" in columns:
        raise DataError(f"{src} already has clean_{column}/is_noisy columns: it looks noisy "
                        "already. Start from the clean manifest.")
    out_rows = []
    for r, v, c in zip(rows, noisy.tolist(), changed.tolist()):
        out_rows.append({**r, column: v, f"clean_{column}": r[column], "is_noisy": int(c)})
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_rows(out, out_rows)
    record = {"source": str(src), "source_sha256": keys.file_sha256(src),
              "out": str(out), "kind": kind, "ratio": ratio, "seed": seed, "column": column,
              "transition": transition, "n": len(rows), "n_noisy": int(changed.sum()),
              "noisy_fraction": float(changed.mean()), "created_at": keys.now_iso(),
              "featstore": keys.library_versions().get("featstore")}
    Path(str(out) + ".noise.json").write_text(json.dumps(record, indent=2))
    return record
