"""Data sets: registered names and paths, each split a :class:`SampleSet`.

Every built-in name lives in one registry (:mod:`featstore.data.registry`); `featstore
datasets` and the ``--dataset`` help are generated from it. Add one with
:func:`register_dataset`.
"""

from __future__ import annotations

from featstore.data._base import ArraySampleSet, FileSampleSet, SampleSet
from featstore.data import builtin  # noqa: F401  (registers the built-in data sets)
from featstore.data.registry import (DATASET_OPTIONS, PATH_KINDS, DatasetEntry, ResolvedDataset,
                                     dataset_entries, fetch_dataset, get_dataset, list_datasets,
                                     load_dataset, register_dataset, resolve_dataset,
                                     unregister_dataset)

__all__ = ["ArraySampleSet", "DATASET_OPTIONS", "DatasetEntry", "FileSampleSet", "PATH_KINDS",
           "ResolvedDataset", "SampleSet", "dataset_entries", "fetch_dataset", "get_dataset",
           "list_datasets", "load_dataset", "register_dataset", "resolve_dataset",
           "unregister_dataset"]
