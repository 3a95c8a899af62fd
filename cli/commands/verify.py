"""`featstore verify`."""

from __future__ import annotations

from typing import Any

import click

from featstore_cli.options import echo_json, json_option


@click.command(epilog="\b\nExamples:\n  featstore verify features/3fa2c1d0\n"
                      "  featstore verify features --all --json\n"
                      "  featstore verify features/3fa2c1d0 --repair   # then rerun extract")
@click.argument("stores", nargs=-1, required=True)
@click.option("--all", "whole_root", is_flag=True, help="Treat each argument as a root and verify every set in it.")
@click.option("--repair", is_flag=True,
              help="Mark the damaged chunks of each damaged set for re-extraction (the set "
                   "becomes incomplete); rerunning the `featstore extract` command that made "
                   "it then recomputes only them.")
@json_option
def verify(stores: tuple[str, ...], whole_root: bool, repair: bool, as_json: bool) -> None:
    """Re-read every array of STORES and check it against its records: each chunk of
    features and valid against its sha256, labels, sample ids and the valid mask
    against their digests, and every array's shape (views included) against the
    metadata.

    Exits 1 if any store is incomplete, has missing chunks or altered bytes.
    """
    from featstore.store import Root

    paths: list[str] = []
    for s in stores:
        paths += [str(e.path) for e in Root(s)] if whole_root else [s]
    reports = [_verify_one(p) for p in paths]
    repaired = {r["path"]: _repair(r) for r in reports if repair and not r["ok"]}
    if as_json:
        for r in reports:
            if r["path"] in repaired:
                r["repaired_chunks"] = repaired[r["path"]]
        echo_json(reports)
    else:
        for r in reports:
            _echo(r, repaired.get(r["path"]))
    failed = [r for r in reports if not r["ok"]]
    if failed:
        _fail(failed, len(reports), repaired)


def _verify_one(path: str) -> dict[str, Any]:
    """The verify report of one set as a dict; a set that cannot even be opened (its
    metadata damaged or forged) is a failed report, not an exception."""
    from featstore.errors import SchemaVersionError, StoreCorruptError
    from featstore.store import open_store

    try:
        with open_store(path, allow_incomplete=True, allow_damaged=True) as fs:
            return fs.verify().as_dict()
    except (StoreCorruptError, SchemaVersionError) as err:
        return {"path": path, "ok": False, "complete": False, "n_chunks": 0, "chunks_ok": 0,
                "missing_chunks": [], "mismatched_chunks": [], "problems": [str(err)],
                "arrays": {}, "unchecked": [], "repairable": False, "unreadable": True}


def _repair(report: dict[str, Any]) -> list[int] | None:
    """Chunks marked for re-extraction; None where nothing chunk-wise can help."""
    from featstore.store.integrity import mark_for_reextraction

    if not report["repairable"]:
        return None
    chunks = mark_for_reextraction(report["path"])
    if chunks is None:
        from featstore.errors import StoreCorruptError

        raise StoreCorruptError(
            f"{report['path']}: another writer holds this key's lease (an extraction or a "
            "copy is running); nothing was changed. Wait for it, then verify again.")
    return chunks


def _echo(r: dict[str, Any], repaired: list[int] | None) -> None:
    if r["ok"]:
        arrays = ("views checked; " + ", ".join(r["unchecked"]) + " unchecked (a set written "
                  "before featstore recorded their digests)") if r["unchecked"] else \
            "labels, sample ids and views checked"
        click.echo(f"OK      {r['path']}: {r['chunks_ok']}/{r['n_chunks']} chunks match their "
                   f"checksums; {arrays}")
        return
    why = []
    if not r["complete"] and not r.get("unreadable"):
        why.append("not marked complete")
    if r["missing_chunks"]:
        why.append(f"{len(r['missing_chunks'])} chunks never written {r['missing_chunks'][:8]}")
    if r["mismatched_chunks"]:
        why.append(f"{len(r['mismatched_chunks'])} chunks differ from their checksum "
                   f"{r['mismatched_chunks'][:8]}")
    if r.get("unreadable"):
        why += r["problems"]
    click.secho(f"FAILED  {r['path']}: {'; '.join(why) or 'damaged'}", fg="red")
    for array, problems in r["arrays"].items():
        for problem in problems[:5]:
            click.echo(f"        {array}: {problem}")
        if len(problems) > 5:
            click.echo(f"        {array}: ... {len(problems) - 5} more")
    if repaired:
        click.echo(f"REPAIR  {r['path']}: chunks {repaired[:10]} marked for re-extraction; "
                   "rerun the `featstore extract` command that made the set.")


def _fail(failed: list[dict[str, Any]], total: int, repaired: dict[str, Any]) -> None:
    """One Error line for the whole run: what failed and what to do next."""
    from featstore.errors import StoreCorruptError, StoreIncompleteError

    first = failed[0]
    more = f" ({len(failed) - 1} more of {total} failed, listed above)" if len(failed) > 1 else ""
    path = first["path"]
    if not first["mismatched_chunks"] and not first["problems"]:
        raise StoreIncompleteError(
            f"{path} is incomplete: rerun the `featstore extract` command that made it to "
            f"resume it{more}.")
    if repaired.get(path):
        hint = ("its damaged chunks are marked for re-extraction: rerun the `featstore "
                "extract` command that made it")
    elif first["repairable"]:
        hint = (f"run `featstore verify {path} --repair`, then rerun the `featstore extract` "
                "command that made it: only the damaged chunks are extracted again")
    else:
        hint = ("labels, sample ids and the array layout cannot be repaired chunk by chunk: "
                "rerun the `featstore extract` command that made it with --force")
    raise StoreCorruptError(f"{path} failed verification (details above); {hint}{more}.")
