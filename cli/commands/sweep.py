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
With 'select_on: val' (and optional val_fraction, select_metric, data_seed), each
(job, method) is one run that trains its whole grid for every seed and keeps the
point with the best validation score, as `featstore tune --grid ... --select-on val`.
\b
Run it:  featstore sweep sweep.yaml   (rerun to resume; finished runs are skipped)
"""
EXAMPLE += f"\b\nmethods: any of {', '.join(list_tuners())}\n"


@click.command(epilog=EXAMPLE)
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run the runs as Ray tasks on a cluster (auto, HOST:PORT or ray://HOST:PORT); "
                   "the stores must be readable from every worker. Same results file as "
                   "without --ray. Needs `pip install 'featstore[ray]'`.")
@json_option
def sweep(config: str, ray_address: str | None, as_json: bool) -> None:
    """Run a grid of tuning runs (methods × hyperparameters × seeds × data sets) on cached
    stores in parallel, appending one result line per run and skipping finished runs."""
    from featstore.workflows.sweep import load_sweep, sweep as run

    cfg = load_sweep(config)
    executor = None
    if ray_address:
        from featstore.workflows.sweep_ray import RayRuns

        executor = RayRuns(ray_address)

    def progress(rec: dict, i: int, n: int) -> None:
        if not as_json:
            acc = next(iter(rec["summary"].values())).get("accuracy", {}).get("mean")
            seeds = (f"seeds {rec['seeds']} selected on val" if "selection" in rec
                     else f"seed {rec['seeds'][0]}")
            click.echo(f"[{i}/{n}] {rec['method']} {seeds} {rec['params']} "
                       f"-> {'' if acc is None else f'acc {100 * acc:.2f}'}")

    summary = run(cfg, on_done=progress, executor=executor)
    if as_json:
        echo_json(summary)
        return
    click.echo(f"{summary['ran']} runs done, {summary['skipped']} already in {summary['results']} "
               f"(of {summary['runs']}), {summary['workers']} workers.")
    click.echo(f"Backbone forward passes avoided by the cache: {summary['forward_passes_avoided']:,}")
