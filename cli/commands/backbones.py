"""`featstore backbones`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option, table


@click.command(epilog="\b\nExample:\n  featstore backbones --json")
@json_option
def backbones(as_json: bool) -> None:
    """List built-in backbone names and the spec schemes extract accepts."""
    from featstore.backbones import list_backbones

    rows = list_backbones()
    if as_json:
        echo_json(rows)
    else:
        click.echo(table(rows, [("name", "name"), ("modality", "modality"),
                                ("description", "description"), ("install", "install")]))
