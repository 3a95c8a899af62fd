"""Whole-or-nothing writes of local files: readers see the old file or the new one,
never half of one.

Every local file featstore writes whole goes through here: model weights, model cards
and checkpoints (`pretrain`), saved heads, noisy manifests, packs, and the files of
feature stores (``featstore.store.location.put_atomic``, which also writes to object
stores, uses this for local paths). The bytes go to a temporary file beside the target,
are flushed to disk (fsync), then renamed over it: a rename within a folder is atomic,
so a crash or a kill at any moment leaves either the old file or the new one.

Where the temporary file goes is the caller's choice:

* ``unique=True`` (default): ``.NAME.XXXXXXXX.tmp``. Concurrent writers of one file
  (two processes extracting the same key) never share a temporary file. A killed
  writer leaves its temporary file behind; ``featstore.store.root`` recognises and
  removes such files in a store.
* ``unique=False``: ``.NAME.tmp``. For a file with a single writer whose rerun must
  leave the folder exactly as an uninterrupted run would (``pretrain``'s output, which
  the crash tests compare byte for byte): the rerun overwrites what a kill left.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def temp_path(path: str | os.PathLike, *, unique: bool = True) -> Path:
    """The temporary file a write of ``path`` goes to before it is renamed."""
    path = Path(path)
    token = f".{uuid.uuid4().hex[:8]}" if unique else ""
    return path.with_name(f".{path.name}{token}.tmp")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *, unique: bool = True,
                **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` whose file appears under ``path`` only when the block ends
    without an exception (then fsynced and renamed); on an exception the temporary file
    is removed and ``path`` is left as it was. ``mode`` is ``"wb"`` or ``"w"``;
    ``open_kwargs`` go to :func:`open` (``encoding``, ``newline``). Missing parent
    folders are created."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    tmp = temp_path(path, unique=unique)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass  # renamed (the usual case), or never made (full disk, read-only folder)


def atomic_write(path: str | os.PathLike, data: bytes | str, *, unique: bool = True) -> None:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` whole or not at all."""
    if isinstance(data, str):
        with atomic_open(path, "w", unique=unique, encoding="utf-8") as f:
            f.write(data)
    else:
        with atomic_open(path, "wb", unique=unique) as f:
            f.write(data)
