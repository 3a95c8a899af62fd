"""`featstore backbones`: the backbone registry as a table."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option, table


@click.command(epilog="\b\nExamples:\n  featstore backbones\n  featstore backbones '*minilm*' --json")
@click.argument("pattern", required=False)
@json_option
def backbones(pattern: str | None, as_json: bool) -> None:
    """List the registered backbone names and spec schemes extract accepts, and how a
    plugin is written. PATTERN filters names (fnmatch, e.g. 'timm*')."""
    from featstore.backbones import backbone_entries
    from featstore.backbones.registry import PLUGIN_FORM

    rows = [e.as_row() for e in backbone_entries(pattern)]
    if not pattern:
        rows.append({"name": PLUGIN_FORM, "modality": "any",
                     "description": "plugin: function(**options) returns a Backbone",
                     "install": ""})
    if as_json:
        echo_json(rows)
    else:
        click.echo(table(rows, [("name", "name"), ("modality", "modality"),
                                ("description", "description"), ("install", "install")]))
