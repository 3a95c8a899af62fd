"""`featstore ls`."""

from __future__ import annotations

from typing import Any

import click

from featstore_cli.options import echo_json, human_bytes, json_option, table

#: How `ls` shows each state in its table (the JSON carries the plain state).
SHOWN = {"complete": "complete", "incomplete": "INCOMPLETE", "damaged": "DAMAGED",
         "newer schema": "NEWER SCHEMA"}


@click.command(epilog="\b\nExamples:\n  featstore ls features\n  featstore ls features --backbone lite0 --json")
@click.argument("root", default="features")
@click.option("--backbone", help="Only feature sets whose backbone id contains this.")
@click.option("--dataset", help="Only feature sets whose data set name contains this.")
@click.option("-k", "--key", "--prefix", "prefix", help="Only keys starting with this.")
@json_option
def ls(root: str, backbone: str | None, dataset: str | None, prefix: str | None,
       as_json: bool) -> None:
    """List the feature sets in ROOT (default: ./features): a folder or a URL (s3://...).

    Each set's state is complete, INCOMPLETE (an extraction or copy never finished: rerun
    it), DAMAGED (its metadata is missing or unreadable: remove it with `featstore rm`,
    or extract it again) or NEWER SCHEMA (written by a newer featstore: upgrade).
    """
    from featstore.errors import FeatstoreError
    from featstore.store import Root, location

    location.check_cli_root(root, write=False)
    try:
        rows = _rows(root, backbone, dataset, prefix)
    except ConnectionError as err:  # a server that is down or refuses (ftp://, sftp://, ...)
        raise FeatstoreError(f"Cannot reach the root {root}: {err}. Check the URL and the "
                             "network.") from err
    if as_json:
        echo_json(rows)
        return
    if not rows:
        if backbone or dataset or prefix:
            total = len(Root(root).entries(damaged=True))
            click.echo(f"No feature sets in {root} match the filters ({total} in all).")
        else:
            click.echo(f"No feature sets in {root}.")
        return
    for r in rows:
        r["shape"] = "x".join(str(x) for x in (r["n_samples"], r["n_views"] if (r["n_views"] or 1) > 1 else None, r["n_features"]) if x)
        r["shown"] = SHOWN.get(r["state"], r["state"])
    click.echo(table(rows, [("key", "key"), ("backbone", "backbone"), ("dataset", "dataset"),
                            ("split", "split"), ("shape", "N x D"), ("dtype", "dtype"),
                            ("format", "format"), ("size_bytes", "size"), ("shown", "state"),
                            ("created_at", "created"), ("created_by", "by")],
                     {"size_bytes": human_bytes}))
    _notes(root, rows)


def _rows(root: str, backbone: str | None, dataset: str | None,
          prefix: str | None) -> list[dict[str, Any]]:
    """One summary per set in ``root`` that passes the filters, damaged ones included."""
    from featstore.errors import StoreNotFoundError
    from featstore.store import Root, location

    path = location.as_path(root)
    if location.protocol(path) in location.BUCKET_PROTOCOLS:
        # Only checks that the bucket exists (a clear error if not). Object stores have
        # no empty folders: a root with nothing in it yet is simply empty.
        location.makedirs(path)
    elif not path.is_dir():
        if path.exists():
            raise StoreNotFoundError(f"{root} is a file, not a root (a folder of feature sets).")
        raise StoreNotFoundError(f"Root {root} does not exist. Create one with `featstore extract --root {root} ...`.")
    entries = Root(root).entries(backbone=backbone, dataset=dataset, prefix=prefix, damaged=True)
    return [e.summary() for e in entries]


def _notes(root: str, rows: list[dict[str, Any]]) -> None:
    """What to do about damaged and newer-schema sets (stderr: the table stays parseable)."""
    for r in rows:
        if r["state"] == "damaged":
            problem = (r["problem"] or "").rstrip(".")
            click.secho(f"damaged {r['key']}: {problem}. Remove it with `featstore rm "
                        f"{root}/{r['key']}`, or extract it again (the next extract of this "
                        "key replaces it).", fg="yellow", err=True)
    newer = [r for r in rows if r["state"] == "newer schema"]
    if newer:
        click.secho(f"{len(newer)} feature set(s) were written by a newer featstore: upgrade "
                    "(pip install -U featstore) to read them.", fg="yellow", err=True)
