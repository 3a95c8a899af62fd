"""Sharing feature sets: copy between roots (local, shared, s3://...), pack to one zip.

Remote roots themselves are plain fsspec URLs (:mod:`featstore.store.location`);
concurrent writers of one key are serialised by leases (:mod:`featstore.store.lease`).
"""

from featstore.workflows.sharing.copy import CopyResult, copy_root, copy_set
from featstore.workflows.sharing.pack import pack, unpack

__all__ = ["CopyResult", "copy_root", "copy_set", "pack", "unpack"]
