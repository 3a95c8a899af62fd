"""What a store backend tells the rest of featstore about its files.

Each backend (``_zarr.py``, ``_hdf5.py``) is the only place that knows how its format
lies on disk: where the metadata is, which files a set holds, where an unfinished set
is written (HDF5: ``KEY.h5.partial``; Zarr: the folder itself) and how it becomes the
finished set. Roots, extraction, the service's worker, ``copy`` and ``pack`` ask through
the class methods below instead, so that a third backend is one new module (and one
more subclass of the conformance suite, tests/store_conformance.py).

Copying a set file by file (``featstore copy``) follows one recipe for every backend:
send every file of :meth:`StoreFormat.files` to :meth:`~StoreFormat.working_path` but
the :attr:`~StoreFormat.completion_files`, write those
:meth:`~StoreFormat.marked_incomplete`, verify the chunk checksums, write the
completion files as they are, then :meth:`~StoreFormat.commit`.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from featstore.store import location
from featstore.store.location import AnyPath, as_path


class StoreFormat(abc.ABC):
    """The on-disk format of a backend, asked before (or without) opening a set."""

    #: The format's name: ``--format`` and ``Entry.format``.
    format: ClassVar[str] = ""
    #: What a finished set is named: ``KEY + suffix``.
    suffix: ClassVar[str] = ""
    #: Every name ending a path given by a user may have to be read as this format.
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: Whether a set is one file (else a folder of files).
    single_file: ClassVar[bool] = False
    #: Files written last when a set is copied file by file: they say it is complete.
    completion_files: ClassVar[tuple[str, ...]] = ()
    #: Files that fix how the chunk files are laid out (chunk rows, codec): a partial
    #: copy whose layout files differ from the source's keeps none of its chunk files.
    layout_files: ClassVar[tuple[str, ...]] = ()
    #: Whether each row chunk of ``features`` and ``valid`` is its own file, found by
    #: its index (Zarr): then the arrays' chunks must be the metadata's ``chunk_rows``,
    #: and a committed chunk's missing file is damage (checked on open).
    row_chunk_files: ClassVar[bool] = False

    # -- names -------------------------------------------------------------------------
    @classmethod
    def name_for(cls, key: str) -> str:
        """The name of the finished set of ``key`` in a root."""
        return f"{key}{cls.suffix}"

    @classmethod
    @abc.abstractmethod
    def key_of(cls, name: str) -> tuple[str, bool] | None:
        """``(key, final)`` if a root entry named ``name`` is a set of this format, where
        ``final`` is False for the working name of an unfinished set (which is never
        read: its writer may be writing it now); None if the name is not this format's."""

    @classmethod
    def working_path(cls, path: Any) -> AnyPath:
        """Where the set whose finished path is ``path`` is written until it is complete
        (by default the set itself: its metadata says whether it is complete)."""
        return as_path(path)

    @classmethod
    def final_path(cls, path: Any) -> AnyPath:
        """The finished path of the set being written at ``path`` (its working path)."""
        return as_path(path)

    # -- files -------------------------------------------------------------------------
    @classmethod
    def files(cls, path: Any) -> dict[str, int]:
        """Relative file name -> size of every file of the set at ``path`` (``""`` names
        a one-file set itself); empty if there is nothing at ``path``."""
        fs, p = location.fs_and_path(path)
        if not fs.exists(p):
            return {}
        if not fs.isdir(p):
            return {"": int(fs.size(p))}
        found = fs.find(p, detail=True)
        base = p.rstrip("/") + "/"
        return {name[len(base):]: int(info.get("size") or 0) for name, info in found.items()
                if name.startswith(base) and info.get("type") != "directory"}

    @classmethod
    def member_path(cls, path: Any, name: str) -> AnyPath:
        """The file ``name`` (a key of :meth:`files`) of the set at ``path``."""
        return location.join(path, name) if name else as_path(path)

    @classmethod
    @abc.abstractmethod
    def is_member(cls, name: str) -> bool:
        """Whether ``name`` (the first component of a path inside a set, or ``""`` for a
        one-file set itself) is something featstore writes into a set of this format."""

    @classmethod
    @abc.abstractmethod
    def looks_like_set(cls, path: Any) -> bool:
        """Whether ``path`` holds only what featstore writes into a set of this format
        (asked before a damaged set is removed: a stranger's files never are)."""

    @classmethod
    @abc.abstractmethod
    def read_metadata(cls, path: Any) -> Any:
        """The raw featstore metadata of the set at ``path`` (any JSON value; None if it
        has none), read without opening its arrays.

        Raises FileNotFoundError if the metadata is absent, OSError / ValueError /
        KeyError / TypeError if it cannot be read at all."""

    #: Where the metadata lives, for messages ("it has no zarr.json").
    metadata_file: ClassVar[str] = "metadata"

    # -- copying file by file ----------------------------------------------------------
    @classmethod
    def checksummed(cls, name: str) -> bool:
        """Whether the file ``name`` is covered by the chunk checksums (so a copy may keep
        it when the destination has it at the same size, and need not read it back)."""
        return False

    @classmethod
    def marked_incomplete(cls, name: str, data: bytes) -> bytes:
        """The bytes of completion file ``name`` saying the set is *not* complete."""
        return data

    @classmethod
    def commit(cls, working: Any, final: Any) -> None:
        """Make the verified set at ``working`` the finished set at ``final``."""
        working, final = as_path(working), as_path(final)
        if str(working) != str(final):
            fs, src = location.fs_and_path(working)
            fs.mv(src, location.fs_and_path(final)[1])
