"""`featstore ls`."""

from __future__ import annotations

import click

from ..options import echo_json, human_bytes, json_option, table


@click.command(epilog="\b\nExamples:\n  featstore ls features\n  featstore ls features --backbone lite0 --json")
@click.argument("root", default="features")
@click.option("--backbone", help="Only feature sets whose backbone id contains this.")
@click.option("--dataset", help="Only feature sets whose data set name contains this.")
@click.option("-k", "--key", "--prefix", "prefix", help="Only keys starting with this.")
@json_option
def ls(root: str, backbone: str | None, dataset: str | None, prefix: str | None,
       as_json: bool) -> None:
    """List the feature sets in ROOT (default: ./features): a folder or a URL (s3://...)."""
    from featstore.errors import StoreNotFoundError
    from featstore.store import Root, location

    path = location.as_path(root)
    in_bucket = location.protocol(path) in location.BUCKET_PROTOCOLS
    if in_bucket:
        # Only checks that the bucket exists (a clear error if not). Object stores have
        # no empty folders: a root with nothing in it yet is simply empty.
        location.makedirs(path)
    elif not path.is_dir():
        raise StoreNotFoundError(f"Root {root} does not exist. Create one with `featstore extract --root {root} ...`.")
    rows = [e.summary() for e in Root(root).entries(backbone=backbone, dataset=dataset, prefix=prefix)]
    if as_json:
        echo_json(rows)
        return
    if not rows:
        if backbone or dataset or prefix:
            total = len(Root(root).entries())
            click.echo(f"No feature sets in {root} match the filters ({total} in all).")
        else:
            click.echo(f"No feature sets in {root}.")
        return
    for r in rows:
        r["shape"] = "x".join(str(x) for x in (r["n_samples"], r["n_views"] if (r["n_views"] or 1) > 1 else None, r["n_features"]) if x)
        r["state"] = "complete" if r["complete"] else "INCOMPLETE"
    click.echo(table(rows, [("key", "key"), ("backbone", "backbone"), ("dataset", "dataset"),
                            ("split", "split"), ("shape", "N x D"), ("dtype", "dtype"),
                            ("format", "format"), ("size_bytes", "size"), ("state", "state"),
                            ("created_at", "created"), ("created_by", "by")],
                     {"size_bytes": human_bytes}))
