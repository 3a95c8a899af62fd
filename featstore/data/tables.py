"""Manifest tables (CSV/TSV/JSONL/Parquet) read into rows, with errors a user can act on.

Text files are decoded strictly: UTF-8 by default (the byte-order mark Excel writes in
"CSV UTF-8" files is dropped; a UTF-16 or UTF-32 mark selects that encoding), or the
encoding named with ``--encoding``. A byte that does not decode is an error naming its
line and the option to pass. Nothing is guessed: a wrong guess would silently change
the text, and with it the features and the content key.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Any

from featstore.errors import ConfigError, DataError, MissingDependencyError

#: The largest CSV field read (a whole document in a text column is fine).
FIELD_LIMIT = 1 << 30
#: Byte-order marks, longest first (UTF-32-LE's mark starts with UTF-16-LE's).
BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"))


def check_encoding(encoding: Any) -> str | None:
    """The codec's canonical name, or None for "detect" (UTF-8, or what a BOM says)."""
    if encoding is None:
        return None
    try:
        if not isinstance(encoding, str):
            raise LookupError(encoding)
        info = codecs.lookup(encoding)
    except LookupError:
        raise ConfigError(f"Unknown --encoding {encoding!r}: expected a text encoding such as "
                          "utf-8, latin-1, cp1252 or utf-16.") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ConfigError(f"--encoding {encoding!r} is not a text encoding; use e.g. utf-8, "
                          "latin-1, cp1252 or utf-16.")
    return info.name


def decode_text(path: Path, encoding: str | None = None) -> str:
    """The file's text: ``encoding``, or UTF-8 (BOM-aware) when None."""
    raw = path.read_bytes()
    name = check_encoding(encoding) or next((n for bom, n in BOMS if raw.startswith(bom)), "utf-8")
    try:
        text = raw.decode(name)
    except UnicodeDecodeError as err:
        # Say where, never what: the bytes of a private file stay out of messages.
        line = raw.count(b"\n", 0, err.start) + 1
        col = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        hint = ("Pass the file's encoding, e.g. --encoding latin-1 (cp1252 for Windows "
                "exports), or save it as UTF-8." if encoding is None else
                f"It is not {encoding} text: pass its real encoding with --encoding.")
        raise DataError(f"{path} cannot be read as {name}: byte {col} of line {line} is not "
                        f"valid {name}. {hint}") from None
    return text.removeprefix("\ufeff")  # a BOM decoded by a codec that keeps it


def read_rows(path: Path, encoding: str | None = None) -> list[dict[str, Any]]:
    """The rows of a manifest as mappings (column -> value), in file order."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _csv_rows(path, decode_text(path, encoding), "\t" if suffix == ".tsv" else ",")
    if suffix == ".jsonl":
        return _jsonl_rows(path, decode_text(path, encoding))
    return _parquet_rows(path)


def _csv_rows(path: Path, text: str, delimiter: str) -> list[dict[str, Any]]:
    """Rows of a CSV/TSV; every line must have as many fields as the header."""
    # Long texts (reviews, documents) are fine: csv's default cap is 128 KiB per field.
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    what = "tab" if delimiter == "\t" else "comma"
    rows: list[dict[str, Any]] = []
    try:
        header = next(reader, None)
        if header is None:
            return rows
        twice = sorted({c for c in header if header.count(c) > 1})
        if twice:
            raise DataError(f"{path}: the header names the column(s) {twice} more than once; "
                            "give each column its own name.")
        for fields in reader:
            if not fields:
                continue  # a blank line
            if len(fields) != len(header):
                n = len(fields)
                raise DataError(
                    f"{path} line {reader.line_num} has {n} field{'s' if n != 1 else ''} but "
                    f"the header has {len(header)}: a {what} too many or too few, or a value "
                    f"holding a {what} without quotes. Fix that line (quote such values).")
            rows.append(dict(zip(header, fields)))
    except csv.Error as err:
        raise DataError(f"{path} line {reader.line_num} is not valid CSV ({err}).") from None
    return rows


def _jsonl_rows(path: Path, text: str) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file: one object per non-blank line."""
    rows = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {n} is not JSON: {err}") from None
        if not isinstance(row, dict):
            raise DataError(f"{path} line {n} is a JSON {type(row).__name__}, not an object: "
                            "each line must be one object, e.g. {\"text\": \"...\", \"label\": 1}.")
        rows.append(row)
    return rows


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import math

    try:
        import pandas as pd

        df = pd.read_parquet(path)
    except ImportError as err:
        raise MissingDependencyError("Parquet manifests need pandas and pyarrow: "
                                     "pip install 'featstore[tables]'.") from err
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{path} is not a readable Parquet file ({type(err).__name__}): it may "
                        "be truncated or another format. Export the table again.") from None

    def plain(v: Any) -> Any:
        v = v.item() if hasattr(v, "item") else v
        return None if isinstance(v, float) and math.isnan(v) else v

    return [{k: plain(v) for k, v in r.items()} for r in df.to_dict("records")]
