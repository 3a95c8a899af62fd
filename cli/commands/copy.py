"""`featstore copy`, `pack` and `unpack`: share feature sets between roots and people."""

from __future__ import annotations

from typing import Any

import click

from featstore_cli.options import echo_json, human_bytes, json_option, table

_select = [
    click.option("-k", "--key", "keys", multiple=True,
                 help="Only sets whose key starts with this (repeatable) [default: all]."),
    click.option("--backbone", help="Only sets whose backbone id contains this."),
    click.option("--dataset", help="Only sets whose data set name contains this."),
]


def select_options(f: Any) -> Any:
    for option in reversed(_select):
        f = option(f)
    return f


COPY_EXAMPLES = """
\b
Examples:
  featstore copy features s3://team-bucket/features                 # push everything
  featstore copy s3://team-bucket/features features --key 3fa2c1d0  # pull one set
  featstore copy features /shared/features --backbone lite0 --dry-run
\b
S3 credentials come from the usual places (AWS_* variables, ~/.aws/credentials,
an instance role); AWS_ENDPOINT_URL points at an S3-compatible server.
"""


@click.command(epilog=COPY_EXAMPLES)
@click.argument("src")
@click.argument("dst")
@select_options
@click.option("--dry-run", is_flag=True, help="Only say what would be copied.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
def copy(src: str, dst: str, keys: tuple[str, ...], backbone: str | None, dataset: str | None,
         dry_run: bool, no_progress: bool, as_json: bool) -> None:
    """Copy complete feature sets from root SRC to root DST (folders or URLs).

    Only files DST lacks are sent (several at a time); every chunk is re-read there and
    verified against its checksum, and a set is marked complete at DST last. An
    interrupted copy resumes when run again. A set holding a symbolic link (at SRC, or
    in a partial copy at DST) is refused, not followed.
    """
    from featstore.workflows.sharing import copy_root
    from featstore.store.location import check_cli_root

    check_cli_root(src, write=False)
    check_cli_root(dst, write=True)

    def report(r: Any) -> None:
        if as_json:
            return
        if r.status == "would copy":
            click.echo(f"would copy {r.key}: {r.files_copied} of {r.files} files, "
                       f"{human_bytes(r.bytes_copied)} -> {r.dst}")
        elif r.status == "copied":
            click.echo(f"copied     {r.key}: {r.files_copied} of {r.files} files, "
                       f"{human_bytes(r.bytes_copied)}, verified -> {r.dst}")
        elif r.status == "up to date":
            click.echo(f"up to date {r.key} ({r.dst})")
        else:
            click.secho(f"{r.status:10s} {r.key}: {r.reason}", fg="yellow", err=True)

    results = copy_root(src, dst, keys=keys, backbone=backbone, dataset=dataset,
                        dry_run=dry_run, progress=not no_progress, on_result=report)
    if as_json:
        echo_json([r.as_dict() for r in results])
    elif not results:
        click.echo(f"No feature sets in {src} match.")


@click.command(epilog="\b\nExamples:\n  featstore pack features lite0-mnist.zip --backbone lite0")
@click.argument("root")
@click.argument("out", type=click.Path(dir_okay=False))
@select_options
@json_option
def pack(root: str, out: str, keys: tuple[str, ...], backbone: str | None, dataset: str | None,
         as_json: bool) -> None:
    """Pack the complete feature sets of ROOT (or those selected) into the zip file OUT.

    A set holding a symbolic link is refused, not followed.
    """
    from featstore.workflows.sharing import pack as run
    from featstore.store.location import check_cli_root

    check_cli_root(root, write=False)
    sets = run(root, out, keys=keys, backbone=backbone, dataset=dataset)
    if as_json:
        echo_json([s.as_dict() for s in sets])
        return
    click.echo(table([s.as_dict() for s in sets],
                     [("key", "key"), ("files", "files"), ("bytes", "size")],
                     {"bytes": human_bytes}))
    click.echo(f"\nPacked {len(sets)} feature set(s) into {out}. "
               f"Unpack with: featstore unpack {out} ROOT")


@click.command(epilog="\b\nExamples:\n  featstore unpack lite0-mnist.zip features")
@click.argument("pack_file", type=click.Path(dir_okay=False))
@click.argument("root")
@json_option
def unpack(pack_file: str, root: str, as_json: bool) -> None:
    """Unpack a zip made by `featstore pack` into ROOT, checking every checksum.

    Refuses the whole pack before writing anything if a member would land outside its
    set (absolute paths, '..', backslashes, odd characters), is a link or special file,
    disagrees with the manifest (names, sizes) or expands like a zip bomb. Each set is
    streamed into a staging folder in ROOT, checked, then moved into place.
    """
    from featstore.workflows.sharing import unpack as run
    from featstore.store.location import check_cli_root

    check_cli_root(root, write=True)
    sets = run(pack_file, root)
    if as_json:
        echo_json([s.as_dict() for s in sets])
        return
    for s in sets:
        click.echo(f"{s.status:9s} {s.key} ({s.files} files, {human_bytes(s.bytes)})")
