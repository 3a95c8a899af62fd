"""The contract every data source meets: ids, labels and samples by index."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from featstore.errors import DataError

Modality = Literal["image", "text"]
Task = Literal["classification", "regression"]


@dataclass
class SampleSet:
    """One split of one data set, ready to be fed to a backbone.

    Subclasses override :meth:`load` (one sample, a ``PIL.Image.Image`` in RGB or a
    ``str``) and :meth:`content_bytes` (the bytes the fingerprint covers). Everything
    else is plain data filled in by the loader.
    """

    name: str                      # data set name, e.g. "mnist-5k" or a path
    split: str                     # split name, e.g. "train"
    modality: Modality             # "image" or "text"
    sample_ids: list[str]          # unique, stable ids (written to the store)
    labels: np.ndarray | None = None   # int64 class indices or float32 targets; None if unlabelled
    classes: list[str] | None = None   # class names for int labels (index -> name)
    task: Task | None = None           # "classification", "regression" or None (no labels)
    source: dict[str, Any] = field(default_factory=dict)  # provenance: where it was read from

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if n == 0:
            raise DataError(
                f"Data set {self.name!r} split {self.split!r} has no samples. "
                "Check the path, the split name and any filters."
            )
        if len(set(self.sample_ids)) != n:
            seen: set[str] = set()
            dup = next(s for s in self.sample_ids if s in seen or seen.add(s))  # type: ignore[func-returns-value]
            raise DataError(
                f"Sample ids of {self.name!r} must be unique; {dup!r} occurs more than once. "
                "Give each row its own id (an 'id' column) or leave ids out to number rows."
            )
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != (n,):
                raise DataError(
                    f"Expected one label per sample ({n}), got labels of shape {self.labels.shape}."
                )
            if self.task is None:
                self.task = "classification" if self.labels.dtype.kind in "iub" else "regression"
            if self.task == "classification":
                self.labels = self.labels.astype(np.int64)
            else:
                self.labels = _finite_targets(self.labels, self.sample_ids, self.name)

    def __len__(self) -> int:
        return len(self.sample_ids)

    # -- to override -----------------------------------------------------------------
    def load(self, index: int) -> Any:
        """Return sample ``index``: an RGB ``PIL.Image.Image`` or a ``str``.

        Raise any exception if the sample cannot be read; the extractor records it
        as invalid (or stops, with ``--strict``).
        """
        raise NotImplementedError

    def content_bytes(self, index: int) -> bytes:
        """The bytes of sample ``index`` that its fingerprint covers (file bytes, text)."""
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------
    def fingerprint(self) -> str:
        """sha256 over the sample ids, their content and the labels, in order."""
        h = hashlib.sha256()
        h.update(f"{self.modality}\n{len(self)}\n".encode())
        for i, sid in enumerate(self.sample_ids):
            h.update(sid.encode("utf-8") + b"\0")
            try:
                data = self.content_bytes(i)
            except OSError:
                data = b"<unreadable>"
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        if self.labels is not None:
            h.update(np.ascontiguousarray(self.labels).tobytes())
        return h.hexdigest()

    def subset(self, indices: Sequence[int]) -> "SampleSet":
        """A view on some rows (used by ``--limit``)."""
        return _Subset(self, list(indices))


def _finite_targets(labels: np.ndarray, ids: list[str], name: str) -> np.ndarray:
    """Regression targets as float32, refusing NaN, inf and values float32 cannot hold
    (they would train to NaN scores): the first such sample is named."""
    with np.errstate(over="ignore", invalid="ignore"):  # checked just below
        out = labels.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        i = int(bad[0])
        raise DataError(f"Data set {name!r}: the regression target of row {i + 1}, sample id "
                        f"{ids[i]!r}, is not a finite float32 number (NaN, inf, or beyond "
                        f"±3.4e38); {len(bad)} sample(s) in all. Fix or drop them.")
    return out


class _Subset(SampleSet):
    def __init__(self, parent: SampleSet, indices: list[int]):
        self._parent = parent
        self._indices = indices
        super().__init__(
            name=parent.name,
            split=parent.split,
            modality=parent.modality,
            sample_ids=[parent.sample_ids[i] for i in indices],
            labels=None if parent.labels is None else parent.labels[indices],
            classes=parent.classes,
            task=parent.task,
            source={**parent.source, "subset_of": len(parent), "subset_size": len(indices)},
        )

    def load(self, index: int) -> Any:
        return self._parent.load(self._indices[index])

    def content_bytes(self, index: int) -> bytes:
        return self._parent.content_bytes(self._indices[index])


class ArraySampleSet(SampleSet):
    """Samples held in memory: uint8 images (N, H, W[, C]) or a list of strings."""

    def __init__(self, *, data: Any, **kw: Any):
        self._data = data
        super().__init__(**kw)

    def load(self, index: int) -> Any:
        if self.modality == "text":
            return str(self._data[index])
        from PIL import Image

        arr = np.asarray(self._data[index])
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        return img.convert("RGB")

    def content_bytes(self, index: int) -> bytes:
        if self.modality == "text":
            return str(self._data[index]).encode("utf-8")
        return np.ascontiguousarray(self._data[index]).tobytes()


class FileSampleSet(SampleSet):
    """Samples that are files on disk (images), or text held in memory with file paths."""

    def __init__(self, *, paths: list[str], **kw: Any):
        self._paths = paths
        super().__init__(**kw)

    def load(self, index: int) -> Any:
        from PIL import Image

        with Image.open(self._paths[index]) as img:
            img.load()
            return img.convert("RGB")

    def content_bytes(self, index: int) -> bytes:
        with open(self._paths[index], "rb") as f:
            return f.read()
