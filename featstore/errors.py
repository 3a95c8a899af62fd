"""Errors a user can cause, each also a subclass of the builtin a caller would catch.

Every message says what was expected, what was found and how to fix it; the CLI turns
any :class:`FeatstoreError` into that message and a non-zero exit, without a traceback.
"""

from __future__ import annotations


class FeatstoreError(Exception):
    """Base class of every error featstore raises on purpose."""

    exit_code = 1


class NotFoundError(FeatstoreError, FileNotFoundError):
    """A file, folder or feature set that was named does not exist."""


class StoreNotFoundError(NotFoundError):
    """No feature set at the given path or key."""


class AlreadyExistsError(FeatstoreError, FileExistsError):
    """Something is already where a new file or folder was to be made."""


class StoreExistsError(AlreadyExistsError):
    """A feature set already exists where a new one was to be created."""


class AmbiguousKeyError(FeatstoreError, LookupError):
    """A key prefix names more than one feature set; a longer prefix names one."""


class StoreIncompleteError(FeatstoreError, RuntimeError):
    """The feature set was never marked complete (an extraction was interrupted)."""


class SchemaVersionError(FeatstoreError, ValueError):
    """The store was written by a newer featstore with a schema this one cannot read."""


class StoreCorruptError(FeatstoreError, ValueError):
    """The store's bytes do not match its checksums, or its layout is not featstore's."""


class ReadOnlyStoreError(FeatstoreError, PermissionError):
    """A write was attempted on a store opened read-only, or the path is not writable."""


class DiskFullError(FeatstoreError, OSError):
    """The disk filled up while writing."""


class UnknownBackboneError(FeatstoreError, ValueError):
    """The backbone name is not known."""


class UnknownDatasetError(FeatstoreError, ValueError):
    """The data set name or path is not one featstore can read."""


class MissingAssetError(FeatstoreError, LookupError):
    """A built-in model or data set is not installed; the message says how to install it."""


class MissingDependencyError(FeatstoreError, ImportError):
    """An optional Python package is needed; the message names the extra to install."""


class DataError(FeatstoreError, ValueError):
    """The data set's contents are not what was expected (columns, label types, ...)."""


class SampleLoadError(DataError):
    """A sample could not be read or decoded (raised with --strict)."""


class DimensionMismatchError(FeatstoreError, ValueError):
    """Arrays whose shapes should agree do not."""


class BackboneError(FeatstoreError, RuntimeError):
    """A backbone could not be built or loaded (bad weights file, wrong architecture)."""


class WeightsNotFoundError(NotFoundError, BackboneError):
    """The weights file given to a backbone (``--weights``) does not exist."""


class EmbeddingAPIError(FeatstoreError, ConnectionError):
    """An embeddings HTTP API could not be reached or kept failing after retries."""


class ConfigError(FeatstoreError, ValueError):
    """An option or a config file has a bad value or an unknown key."""


class OtherRunExistsError(AlreadyExistsError, ConfigError):
    """An output folder holds a run made with other options (``pretrain --out``): going
    on would mix the two; the message says how to keep or discard it."""


class ModelChangedError(FeatstoreError, RuntimeError):
    """The model behind a backbone spec no longer computes what it computed for a feature
    set (an API serving another model under the same name): resuming or reusing the set
    would mix two models under one key."""
