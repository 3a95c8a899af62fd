"""Compression choices for feature arrays, by name (see docs/storage.md for measurements)."""

from __future__ import annotations

from typing import Any

from featstore.errors import ConfigError

#: Names accepted by ``--codec``; the first is the default.
CODECS = ("zstd", "blosc-zstd", "lz4", "none")
DEFAULT_CODEC = "zstd"


def parse_codec(name: str) -> str:
    name = (name or DEFAULT_CODEC).lower()
    if name not in CODECS:
        raise ConfigError(f"Unknown codec {name!r}; expected one of {', '.join(CODECS)}.")
    return name


def zarr_compressors(name: str, dtype: str) -> Any:
    from zarr.codecs import BloscCodec, BloscShuffle, ZstdCodec

    name = parse_codec(name)
    itemsize = 2 if "16" in str(dtype) else 4
    if name == "zstd":
        return [ZstdCodec(level=3)]
    if name == "blosc-zstd":
        return [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle, typesize=itemsize)]
    if name == "lz4":
        return [BloscCodec(cname="lz4", clevel=5, shuffle=BloscShuffle.shuffle, typesize=itemsize)]
    return None


def hdf5_options(name: str) -> dict[str, Any]:
    """h5py dataset keyword arguments for a codec name (only filters h5py ships)."""
    name = parse_codec(name)
    if name == "none":
        return {}
    if name == "lz4":
        return {"compression": "lzf", "shuffle": True}
    # zstd is not built into h5py; gzip level 1 with shuffle is the nearest built-in.
    return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
