"""`featstore verify`."""

from __future__ import annotations

import click

from ..options import echo_json, json_option


@click.command(epilog="\b\nExamples:\n  featstore verify features/3fa2c1d0\n  featstore verify features --all --json")
@click.argument("stores", nargs=-1, required=True)
@click.option("--all", "whole_root", is_flag=True, help="Treat each argument as a root and verify every set in it.")
@json_option
def verify(stores: tuple[str, ...], whole_root: bool, as_json: bool) -> None:
    """Re-read every chunk of STORES and check it against its recorded sha256.

    Exits 1 if any store is incomplete, has missing chunks or altered bytes.
    """
    from featstore.store import Root, open_store

    paths: list[str] = []
    for s in stores:
        paths += [str(e.path) for e in Root(s)] if whole_root else [s]
    reports = []
    for p in paths:
        with open_store(p, allow_incomplete=True) as fs:
            reports.append(fs.verify())
    if as_json:
        echo_json([r.as_dict() for r in reports])
    else:
        for r in reports:
            if r.ok:
                click.echo(f"OK      {r.path}: {r.chunks_ok}/{r.n_chunks} chunks match their checksums")
            else:
                why = []
                if not r.complete:
                    why.append("not marked complete")
                if r.missing:
                    why.append(f"{len(r.missing)} chunks never written {r.missing[:8]}")
                if r.mismatched:
                    why.append(f"{len(r.mismatched)} chunks differ from their checksum {r.mismatched[:8]}")
                why += r.problems
                click.secho(f"FAILED  {r.path}: {'; '.join(why)}", fg="red")
    if not all(r.ok for r in reports):
        raise SystemExit(1)
