"""`featstore rm`: remove feature sets, and nothing else."""

from __future__ import annotations

from typing import Any

import click

from featstore_cli.options import human_bytes

EPILOG = """
\b
Examples:
  featstore rm features/3fa2c1d0
  featstore rm features --incomplete --yes
\b
Only feature sets are removed: a KEY.zarr folder or KEY.h5 file whose featstore
metadata names its key, or a damaged one (named by its key, holding only what
featstore writes). Roots, other files and folders, and links are refused. A set
that a running extraction, copy or unpack is writing (its lease is live) is never
removed.
"""


def describe(e: Any) -> str:
    """One line a person can check before saying yes: what the set is and its state."""
    s = e.summary()
    what = f"{s['backbone'] or '?'} {s['dataset'] or '?'}/{s['split'] or '?'}"
    return (f"{e.state:12s} {e.key}  {what}  {human_bytes(s['size_bytes'])}  ({e.path})"
            + (f"\n             {e.problem}" if e.problem else ""))


@click.command(epilog=EPILOG)
@click.argument("target")
@click.option("--incomplete", is_flag=True,
              help="TARGET is a root: remove its incomplete and damaged feature sets.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(target: str, incomplete: bool, yes: bool) -> None:
    """Remove a feature set (ROOT/KEY_PREFIX or a store path), or a root's incomplete sets."""
    from featstore.errors import FeatstoreError
    from featstore.store import location
    from featstore.store import root as roots

    location.check_cli_root(target, write=True)
    if incomplete:
        victims = []
        for e in roots.unfinished_sets(target):
            who = roots.live_writer(e)
            if who is None:
                victims.append(e)
            else:
                click.secho(f"skip         {e.key}: being written by {who} (its lease is live)",
                            fg="yellow", err=True)
    else:
        entry = roots.set_to_remove(target)
        who = roots.live_writer(entry)
        if who is not None:
            raise FeatstoreError(roots.busy_message(entry, who))
        victims = [entry]
    if not victims:
        click.echo("Nothing to remove.")
        return
    for e in victims:
        click.echo(f"remove {describe(e)}")
    if not yes:
        click.confirm(f"Remove {len(victims)} feature set(s)?", abort=True)
    removed = 0
    for e in victims:
        try:
            roots.remove_set(e)
            removed += 1
        except FeatstoreError as err:
            if not incomplete or isinstance(err, OSError):
                raise  # one set asked for; or the root itself cannot be written
            click.secho(f"skip         {e.key}: {err}", fg="yellow", err=True)
    click.echo(f"Removed {removed}.")
