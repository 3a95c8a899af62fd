"""IDX files (the MNIST format), plain or gzipped."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from featstore.errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX array: magic (0, 0, dtype code, ndim), big-endian dims, then data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(
            f"{path} is not an IDX file: expected the magic bytes 00 00 <type> <ndim>, got "
            f"{raw[:4].hex(' ')}. IDX files are MNIST's format (e.g. train-images-idx3-ubyte.gz)."
        )
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - offset != expected:
        raise DataError(f"{path}: header says {dims} ({expected} bytes) but {len(raw) - offset} follow.")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def labels_beside(images: Path) -> Path | None:
    """train-images-idx3-ubyte.gz -> train-labels-idx1-ubyte.gz, if it exists."""
    name = images.name.replace("images", "labels").replace("idx3", "idx1")
    cand = images.with_name(name)
    return cand if cand != images and cand.exists() else None
