"""`featstore rm`."""

from __future__ import annotations

import click


@click.command(epilog="\b\nExamples:\n  featstore rm features/3fa2c1d0\n  featstore rm features --incomplete --yes")
@click.argument("target")
@click.option("--incomplete", is_flag=True, help="TARGET is a root: remove its incomplete feature sets.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def rm(target: str, incomplete: bool, yes: bool) -> None:
    """Remove a feature set (ROOT/KEY_PREFIX or a store path), or a root's incomplete sets."""
    from featstore.store import Root, location
    from featstore.store.root import resolve_store_path

    if incomplete:
        victims = [e.path for e in Root(target) if not e.complete]
    else:
        victims = [resolve_store_path(target)]
    if not victims:
        click.echo("Nothing to remove.")
        return
    for v in victims:
        click.echo(f"remove {v}")
    if not yes:
        click.confirm(f"Remove {len(victims)} feature set(s)?", abort=True)
    for v in victims:
        location.remove(v)
    click.echo(f"Removed {len(victims)}.")
