"""`featstore sweep`."""

from __future__ import annotations

import click

from featstore.tuners import list_tuners
from featstore_cli.options import echo_json, json_option

EXAMPLE = """
\b
Example sweep.yaml:
  results: sweep.jsonl
  jobs:
    - {train: features/a96c, test: features/f19d, ood: [features/b61e]}
  methods: [lp, mlp, nmtune]
  seeds: 3
  params: {epochs: 30}
  grid:
    nmtune: {lambda_svd: [0.0, 0.01, 0.1]}
  workers: 2
\b
Run it:  featstore sweep sweep.yaml   (rerun to resume; finished runs are skipped)
"""
EXAMPLE += f"\b\nmethods: any of {', '.join(list_tuners())}\n"


@click.command(epilog=EXAMPLE)
@click.argument("config", type=click.Path(dir_okay=False))
@json_option
def sweep(config: str, as_json: bool) -> None:
    """Run a grid of tuning runs (methods × hyperparameters × seeds × data sets) on cached
    stores in parallel, appending one result line per run and skipping finished runs."""
    from featstore.workflows.sweep import load_sweep, sweep as run

    cfg = load_sweep(config)

    def progress(rec: dict, i: int, n: int) -> None:
        if not as_json:
            acc = next(iter(rec["summary"].values())).get("accuracy", {}).get("mean")
            click.echo(f"[{i}/{n}] {rec['method']} seed {rec['seeds'][0]} {rec['params']} "
                       f"-> {'' if acc is None else f'acc {100 * acc:.2f}'}")

    summary = run(cfg, on_done=progress)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['ran']} runs done, {summary['skipped']} already in {summary['results']} "
               f"(of {summary['runs']}), {summary['workers']} workers.")
    click.echo(f"Backbone forward passes avoided by the cache: {summary['forward_passes_avoided']:,}")
