"""`featstore eval` and `featstore predict`: apply a saved head to stores."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option, table


@click.command("eval", epilog="\b\nExample:\n  featstore eval --head heads/nmtune-seed0 features/f19d features/b61e")
@click.option("--head", required=True, help="A head saved by `featstore tune --save-heads DIR` (DIR/METHOD-seedK).")
@click.argument("stores", nargs=-1, required=True)
@json_option
def eval_cmd(head: str, stores: tuple[str, ...], as_json: bool) -> None:
    """Metrics of a saved head on labelled STORES of the same backbone."""
    from featstore.workflows.tuning import evaluate

    rows = evaluate(head, list(stores))
    if as_json:
        echo_json(rows)
        return
    metrics = [k for k in rows[0] if k not in ("store", "name")]
    click.echo(table([{**r, **{m: f"{r[m]:.4f}" for m in metrics}} for r in rows],
                     [("name", "store")] + [(m, m) for m in metrics]))


@click.command(epilog="\b\nExample:\n  featstore predict --head heads/nmtune-seed0 features/f19d --out predictions.csv")
@click.option("--head", required=True, help="A head saved by `featstore tune --save-heads DIR`.")
@click.argument("store")
@click.option("--out", default="-", show_default=True, help="CSV file for sample_id,prediction[,p_CLASS...]; - is stdout.")
def predict(head: str, store: str, out: str) -> None:
    """Predictions of a saved head for every valid sample of STORE."""
    import csv
    import sys
    from pathlib import Path

    from featstore.utils.outputs import check_output_file
    from featstore.workflows.tuning import predict as run

    if out != "-":
        check_output_file(out, "--out", "predictions.csv")  # before the head runs
    ids, pred, proba = run(head, store)
    if out != "-":
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    f = sys.stdout if out == "-" else open(out, "w", newline="")
    try:
        w = csv.writer(f)
        w.writerow(["sample_id", "prediction"] + ([f"p_{i}" for i in range(proba.shape[1])] if proba is not None else []))
        for i, sid in enumerate(ids):
            w.writerow([sid, pred[i]] + ([f"{p:.6f}" for p in proba[i]] if proba is not None else []))
    finally:
        if f is not sys.stdout:
            f.close()
            click.echo(f"wrote {len(ids)} predictions to {out}", err=True)
