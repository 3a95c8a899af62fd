"""`featstore info`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option


@click.command(epilog="\b\nExamples:\n  featstore info features/3fa2c1d0\n  featstore info features/3fa2c1d09b7e4a55e0c1f2aa.zarr --json")
@click.argument("store")
@json_option
def info(store: str, as_json: bool) -> None:
    """Show STORE's metadata: provenance, shape, labels, invalid samples.

    STORE is a .zarr folder, an .h5 file, or ROOT/KEY_PREFIX. The labels, sample ids
    and valid mask shown are checked against their digests; a damaged set is an
    error naming `featstore verify`.
    """
    import numpy as np

    from featstore.store import open_store

    with open_store(store, allow_incomplete=True) as fs:
        meta = dict(fs.metadata)
        valid = fs.valid
        labels = fs.labels
        summary = {
            "path": str(fs.path), "format": fs.format, "shape": list(fs.shape),
            "n_invalid": int((~valid).sum()),
            "invalid_ids": fs.sample_ids[~valid][:20].tolist(),
            "committed_chunks": len(fs.committed_chunks()), "n_chunks": fs.n_chunks,
        }
        if labels is not None and labels.dtype.kind in "iu":
            values, counts = np.unique(labels, return_counts=True)
            summary["label_counts"] = {int(v): int(c) for v, c in zip(values, counts)}
    if as_json:
        echo_json({**summary, "metadata": meta})
        return
    bb, ds, ex = (meta.get(k) or {} for k in ("backbone", "dataset", "extraction"))
    state = "complete" if meta.get("complete") else (
        f"INCOMPLETE ({summary['committed_chunks']}/{summary['n_chunks']} chunks) - rerun the "
        "extract command to resume")
    lines = [
        ("path", summary["path"]), ("key", meta.get("key")), ("state", state),
        ("format", f"{fs.format}, {meta.get('dtype')}, codec {meta.get('codec')}, "
                   f"{meta.get('chunk_rows')} rows/chunk"),
        ("shape", " x ".join(map(str, summary["shape"]))),
        ("backbone", f"{bb.get('id')} ({bb.get('architecture', '')})"),
        ("weights", f"sha256 {str(bb.get('weights_sha256'))[:16]}... from {bb.get('weights_source')}"),
        ("layer/pool", f"{bb.get('layer')} / {bb.get('pooling')}"),
        ("preprocess", _fmt(bb.get("preprocessing"))),
        ("dataset", f"{ds.get('name')} split {ds.get('split')} ({ds.get('modality')}, {ds.get('task')})"),
        ("fingerprint", str(ds.get("fingerprint"))[:16] + "..."),
        ("classes", _fmt(ds.get("classes"))),
        ("views", _fmt(meta.get("views"))),
        ("invalid", f"{summary['n_invalid']}" + (f": {', '.join(summary['invalid_ids'][:5])}" if summary["n_invalid"] else "")),
        ("checksums", _records(meta)),
        ("created", f"{meta.get('created_at')} by {meta.get('created_by')}"),
        ("extraction", f"{ex.get('seconds')} s on {ex.get('device')}" if ex else "-"),
        ("versions", _fmt(meta.get("versions"))),
    ]
    for k, v in lines:
        click.echo(f"{k:12s} {v}")


def _records(meta: dict) -> str:
    """Which arrays the set's commit records cover (`featstore verify` checks them)."""
    digests = meta.get("arrays_sha256")
    if not isinstance(digests, dict):
        return ("sha256 per chunk of features+valid; labels and sample ids unchecked (written "
                "before featstore recorded their digests)")
    have = [k for k, v in digests.items() if v]
    return f"sha256 per chunk of features+valid; digests of {', '.join(have)}"


def _fmt(value: object) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items() if v is not None)
    if isinstance(value, list):
        s = ", ".join(map(str, value))
        return s if len(s) < 100 else s[:97] + "..."
    return "-" if value is None else str(value)
