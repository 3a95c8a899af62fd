"""Where stores live: local paths, or any fsspec URL (``s3://``, ``gs://``, ``memory://``).

A location is a :class:`pathlib.Path` for a local path (or ``file://`` URL) and a
:class:`upath.UPath` for a remote URL, so code can use one path API for both. Remote
credentials come from where the file system's library looks for them (for S3: the
``AWS_*`` environment variables, ``~/.aws/credentials`` / ``~/.aws/config``, an instance
role; ``AWS_ENDPOINT_URL`` points at an S3-compatible server). featstore never takes
credentials as options, so they never reach metadata, logs or job queues.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Union

from featstore.errors import (ConfigError, DiskFullError, MissingDependencyError, ReadOnlyStoreError,
                      StoreNotFoundError)
from featstore.utils.atomic import atomic_write, temp_path

AnyPath = Union[Path, Any]  # Path or upath.UPath

#: The package each remote protocol needs, named in the error when it is missing.
PROTOCOL_PACKAGES = {"s3": "s3fs (pip install 'featstore[s3]')",
                     "gs": "gcsfs (pip install 'featstore[gcs]')",
                     "gcs": "gcsfs (pip install 'featstore[gcs]')"}


def is_url(path: Any) -> bool:
    s = str(path)
    return "://" in s and not s.startswith("file://")


def as_path(path: Any) -> AnyPath:
    """``path`` as a Path (local) or a UPath (remote URL)."""
    if isinstance(path, Path):
        return path
    if not isinstance(path, str) and is_remote(path):
        return path
    s = str(path)
    if s.startswith("file://"):
        return Path(s[len("file://"):])
    if "://" in s:
        from upath import UPath

        try:
            # No listing cache: other processes add files (chunks, leases) all the time.
            return UPath(s, use_listings_cache=False)
        except (ImportError, ValueError) as err:
            protocol = s.split("://", 1)[0]
            need = PROTOCOL_PACKAGES.get(protocol, f"an fsspec implementation for {protocol}://")
            raise MissingDependencyError(
                f"Reading {s} needs {need}. ({err})") from err
    return Path(s)


def is_remote(path: Any) -> bool:
    """True for a UPath on a non-local file system."""
    return hasattr(path, "fs") and not isinstance(path, Path)


def fs_and_path(path: Any) -> tuple[Any, str]:
    """The fsspec file system and the path within it."""
    path = as_path(path)
    if is_remote(path):
        return path.fs, path.path
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem(), os.path.abspath(path)


def join(path: Any, *parts: str) -> AnyPath:
    out = as_path(path)
    for p in parts:
        out = out / p
    return out


def with_suffix_added(path: Any, suffix: str) -> AnyPath:
    path = as_path(path)
    return path.with_name(path.name + suffix)


def exists(path: Any) -> bool:
    return as_path(path).exists()


def remove(path: Any) -> None:
    """Remove a file or a folder (tree) if it exists."""
    path = as_path(path)
    if is_remote(path):
        fs, p = fs_and_path(path)
        if fs.exists(p):
            fs.rm(p, recursive=True)
        return
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    except OSError as err:
        raise write_error(err, path) from err


def size_of(path: Any) -> int:
    """Bytes under ``path`` (a file or a folder)."""
    fs, p = fs_and_path(path)
    try:
        if fs.isdir(p):
            return int(fs.du(p, total=True))
        return int(fs.size(p) or 0)
    except FileNotFoundError:
        return 0


#: Protocols whose root folder is a bucket, which featstore never creates.
BUCKET_PROTOCOLS = ("s3", "s3a", "gs", "gcs")


def protocol(path: Any) -> str:
    path = as_path(path)
    return str(getattr(path, "protocol", "") or "file") if is_remote(path) else "file"


def makedirs(path: Any) -> None:
    """Create a root folder. On object stores there are no folders to create, and a
    missing bucket is an error (a typo must not create a new bucket)."""
    path = as_path(path)
    if is_remote(path):
        fs, p = fs_and_path(path)
        if protocol(path) in BUCKET_PROTOCOLS:
            bucket = p.strip("/").split("/", 1)[0]
            try:
                fs.info(bucket)  # unlike exists(), raises credential and network errors
            except FileNotFoundError:
                raise StoreNotFoundError(
                    f"The bucket does not exist: {bucket!r} (for {path}). Create it, or check "
                    "the URL's bucket name.") from None
        else:
            fs.makedirs(p, exist_ok=True)
        return
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as err:
        raise ConfigError(f"The root {path} is a file, not a folder. Choose a folder (it is "
                          "created if missing).") from err
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise ReadOnlyStoreError(
                f"Cannot create the root {path}: {err.strerror}. Choose a --root you can "
                "write to.") from err
        raise


def put_atomic(path: Any, data: bytes) -> None:
    """Write ``data`` so that readers see the whole file or none of it.

    Local: :func:`featstore.utils.atomic.atomic_write` (a temporary file
    ``.NAME.XXXXXXXX.tmp`` beside it, then a rename). Object stores: one PUT, which is
    atomic.
    """
    path = as_path(path)
    if is_remote(path):
        fs, p = fs_and_path(path)
        fs.pipe_file(p, data)
        return
    try:
        atomic_write(path, data)
    except OSError as err:
        raise write_error(err, path) from err


#: Where create_exclusive is atomic: S3 conditional PUT (If-None-Match), memory (a lock).
ATOMIC_CREATE = ("s3", "s3a", "memory")
_MEMORY_LOCK = threading.Lock()


def create_exclusive(path: Any, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist; True if this call made it.

    Local and shared file systems: write a temporary file, then ``link`` it to the
    name (atomic, and safe on NFS, unlike O_EXCL on old clients). S3: a conditional
    PUT (``If-None-Match: *``). Readers never see the file without its contents.
    """
    path = as_path(path)
    if is_remote(path):
        proto = protocol(path)
        if proto not in ATOMIC_CREATE:
            raise ConfigError(_unwritable(proto))
        fs, p = fs_and_path(path)
        try:
            if proto == "memory":
                with _MEMORY_LOCK:  # in-process only: a lock makes it exclusive
                    if fs.exists(p):
                        return False
                    fs.pipe_file(p, data)
                    return True
            fs.pipe_file(p, data, mode="create")
        except FileExistsError:
            return False
        except TypeError as err:  # an fsspec implementation without mode="create"
            raise MissingDependencyError(
                f"{type(fs).__name__} cannot create files exclusively (needed for leases on "
                f"{path}); upgrade it (s3fs >= 2025.1).") from err
        return True
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A full disk or a read-only root fails here: the temporary file, if made,
            # is removed below, so no stray file is left beside the lease.
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            _discard(tmp)
    except OSError as err:
        raise write_error(err, path) from err


def _unwritable(proto: str) -> str:
    return (f"Writing to {proto}:// roots is not supported: one writer per key needs an "
            "atomic create-if-absent, which featstore uses on local and shared file "
            "systems, s3:// and memory://. Extract into one of those (and read from "
            f"{proto}:// as you like).")


def _discard(tmp: Path) -> None:
    """Remove a temporary file if it is there (best effort: it is hidden and unused)."""
    try:
        tmp.unlink()
    except OSError:
        pass  # never made (full disk, read-only folder), or already linked and gone


def write_error(err: OSError, path: Any) -> OSError:
    """A full disk or a read-only location as a featstore error (one clear line in the
    CLI); any other OS error unchanged."""
    if isinstance(err, (DiskFullError, ReadOnlyStoreError)):
        return err
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(
            f"The disk holding {path} is full (or over quota). Free space, or choose another "
            "root, and rerun the same command: committed chunks are kept.")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return ReadOnlyStoreError(
            f"Cannot write to {path}: {err.strerror or err}. The root is read-only for you: "
            "choose a root you can write to, or ask for write access.")
    return err


#: URL schemes the command line never takes as a root, and why.
_CLI_REFUSED = {
    "memory": ("memory:// roots live inside one Python process: the command's results would "
               "be lost when it exits. Use a folder or an s3:// URL (the Python API still "
               "takes memory:// roots)."),
    "http": ("http(s):// URLs cannot be roots: a web server offers neither listings nor "
             "atomic writes. Use a folder, a shared file system or s3://...; to hand sets "
             "to others over HTTP, `featstore pack` them into a zip."),
}
_CLI_REFUSED["https"] = _CLI_REFUSED["http"]
#: Protocols the command line writes roots to (besides local and shared folders).
CLI_WRITABLE = ("s3", "s3a")


def check_cli_root(root: Any, *, write: bool = True) -> Any:
    """Refuse, before any work, a root the command line cannot use; return it unchanged.

    Local folders pass (they are checked where they are used). URLs must name a file
    system whose package is installed; ``memory://`` and ``http(s)://`` are refused
    (results that vanish, servers without listings); writing needs s3://. Makes no
    network connection.
    """
    text = str(root)
    if not is_url(text):
        return root
    proto = text.split("://", 1)[0].lower()
    if proto in _CLI_REFUSED:
        raise ConfigError(f"{text}: {_CLI_REFUSED[proto]}")
    need = _missing_package(proto, text)
    if write and proto not in CLI_WRITABLE:
        raise ConfigError(
            f"{text}: {proto}:// roots are read-only for featstore (one writer per key needs "
            "an atomic create-if-absent, which it has on local and shared folders and s3://). "
            f"Write to one of those, then read from {proto}://"
            + (f"; reading it needs {need}." if need else "."))
    if need:
        raise MissingDependencyError(f"Reading {text} needs {need}.")
    return root


def _missing_package(proto: str, text: str) -> str | None:
    """The package ``proto://`` needs when it is not installed here, or None."""
    import fsspec

    try:
        fsspec.get_filesystem_class(proto)
    except ValueError:
        raise ConfigError(f"{text}: unknown protocol {proto}://. Use a folder, s3://... "
                          "or gs://...") from None
    except ImportError:
        return PROTOCOL_PACKAGES.get(proto, f"an fsspec implementation for {proto}://")
    return None


def explain_storage_error(err: BaseException) -> str | None:
    """A message for a remote-storage error a user can fix, or None if it is not one.

    Credentials are never part of the message: only where they are looked for.
    """
    name = type(err).__name__
    text = str(err)
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ("No credentials for S3. Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or "
                "AWS_PROFILE with ~/.aws/credentials, or run where an instance role applies); "
                "set AWS_ENDPOINT_URL for an S3-compatible server. featstore reads them from "
                "there only and never writes them into stores or logs.")
    if name in ("EndpointConnectionError", "ConnectTimeoutError") or (
            "Could not connect to the endpoint" in text):
        return (f"Cannot reach the storage server ({text}). Check AWS_ENDPOINT_URL and the "
                "network.")
    if isinstance(err, PermissionError) and ("://" in text or "AccessDenied" in text
                                              or "Forbidden" in text):
        return (f"Access denied: {text}. Your credentials may read but not write there (a "
                "read-only root): ask for write access, or extract/copy to a root you can "
                "write to.")
    if isinstance(err, FileNotFoundError) and ("NoSuchBucket" in text or "bucket" in text.lower()):
        return f"The bucket does not exist: {text}. Create it, or check the URL's bucket name."
    return None
