"""`featstore tune`."""

from __future__ import annotations

import click

from featstore.tuners import list_tuners, tuner_entries
from featstore.tuners.registry import option_help
from featstore_cli.options import echo_json, json_option, table

EXAMPLES = """
\b
Examples:
  featstore tune --train features/a96c --test features/f19d --ood features/b61e --method nmtune --seeds 3
  featstore tune --train features/a96c --test features/f19d --method logreg --results results.jsonl --json
  featstore tune --train features/a96c --test features/f19d --method lp --grid lr=0.001,0.01,0.1 \\
      --grid weight_decay=0,1e-4 --select-on val --val-fraction 0.2
"""


@click.command(epilog=EXAMPLES)
@click.option("--train", required=True, help="Store (path or ROOT/KEY_PREFIX) to train on.")
@click.option("--test", required=True, help="In-domain test store.")
@click.option("--ood", multiple=True, help="Out-of-domain store(s) with the same labels (repeatable).")
@click.option("--method", type=click.Choice(list_tuners()), default="nmtune", show_default=True,
              help="Tuning method: " + "; ".join(f"{e.name} ({e.description})"
                                                 for e in tuner_entries()) + ".")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Number of seeds (runs 0..N-1).")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help=f"Training epochs [default: {option_help('epochs')}].")
@click.option("--lr", type=float, default=None,
              help=f"Learning rate, > 0 [default: {option_help('lr')}].")
@click.option("--batch-size", type=click.IntRange(min=2), default=None,
              help=f"Mini-batch size [default: {option_help('batch_size')}].")
@click.option("--device", default=None,
              help="auto, cpu, cuda or cuda:N [default: auto]; logreg takes auto or cpu only "
                   "(it runs on the CPU).")
@click.option("--stream", type=click.Choice(["auto", "always", "never"]), default=None,
              help="Read features chunk by chunk instead of loading them [default: auto, "
                   "streams stores whose features exceed a quarter of the available memory].")
@click.option("--train-noise", type=float, default=None,
              help="Corrupt this fraction of the training labels (seeded per run; test/OOD stay clean).")
@click.option("--noise-kind", type=click.Choice(["symmetric", "symmetric-all", "pairflip"]),
              default=None, help="Kind of --train-noise [default: symmetric].")
@click.option("--results", default=None,
              help="Append one JSON line per call to this file (checked before training).")
@click.option("--save-heads", default=None,
              help="Folder to save each seed's head in (for eval/predict; not for "
                   f"{', '.join(e.name for e in tuner_entries() if not e.saves_heads)}).")
@click.option("--grid", "grid_items", multiple=True, metavar="NAME=V1,V2,...",
              help="Train every combination of these values (repeatable, e.g. --grid "
                   "lr=0.001,0.01 --grid weight_decay=0,1e-4) and keep the one with the best "
                   "validation score; needs --select-on val. Heads that share a pass over the "
                   "data train together.")
@click.option("--select-on", type=click.Choice(["val"]), default=None,
              help="Choose the grid point on a validation split (never on --test).")
@click.option("--val", "val_store", default=None,
              help="Validation store for --select-on val [default: carve --val-fraction of "
                   "--train, stratified, seed 0].")
@click.option("--val-fraction", type=float, default=0.2, show_default=True,
              help="Fraction of --train carved for validation when --val is not given.")
@click.option("--select-metric", default="accuracy", show_default=True,
              help="Validation metric to choose by: accuracy, macro_f1, "
                   "mean_per_class_accuracy, mcc; pearson, spearman, mse (lowest) for regression.")
@click.option("--data-seed", type=click.IntRange(min=0), default=None,
              help="With --select-on: one data order for every seed, so seeds change only the "
                   "initialisation and all heads train in one pass [default: each seed its own "
                   "data order, one pass per seed].")
@json_option
def tune(train: str, test: str, ood: tuple[str, ...], method: str, seeds: int, epochs: int | None,
         lr: float | None, batch_size: int | None, device: str | None, stream: str | None,
         train_noise: float | None, noise_kind: str | None, results: str | None,
         save_heads: str | None, grid_items: tuple[str, ...], select_on: str | None,
         val_store: str | None, val_fraction: float, select_metric: str, data_seed: int | None,
         as_json: bool) -> None:
    """Train a head (LP, MLP, NMTune, or logistic regression) on cached features over
    seeds, and evaluate it in-domain and out-of-domain. The backbone never runs.

    The same flags work in a loop over methods where they are harmless: logreg accepts
    --device cpu/auto and --stream auto/never; options it would silently ignore
    (--device cuda, --epochs, --lr, --batch-size, --stream always) are refused.

    With --grid and --select-on val, every grid point is trained for every seed, the best
    by mean validation score is chosen, and only the chosen heads are evaluated on --test
    and --ood (the test set never takes part in the choice)."""
    from featstore.workflows.selection import parse_grid_option
    from featstore.workflows.tuning import tune as run

    params = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                "device": device, "stream": stream}.items() if v is not None}
    if noise_kind and not train_noise:
        from featstore.errors import ConfigError

        raise ConfigError("--noise-kind needs --train-noise RATIO.")
    params.update({k: v for k, v in {"train_noise": train_noise, "noise_kind": noise_kind}.items()
                   if v is not None})
    rec = run(train, test, list(ood), method, seeds=seeds, params=params, results=results,
              save_heads=save_heads, grid=parse_grid_option(grid_items) or None,
              select_on=select_on, val=val_store, val_fraction=val_fraction,
              select_metric=select_metric, data_seed=data_seed)
    if as_json:
        echo_json(rec)
        return
    if "selection" in rec:
        _echo_selection(rec["selection"])
    rows = []
    for name, s in rec["summary"].items():
        row = {"eval": f"{name} ({s['kind']})"}
        for metric in ("accuracy", "macro_f1", "mean_per_class_accuracy", "mcc", "pearson", "spearman"):
            if metric in s:
                sd = s[metric]["std"]  # sample std; None with one seed
                row[metric] = f"{100 * s[metric]['mean']:.2f} ± " + ("n/a" if sd is None else f"{100 * sd:.2f}")
        rows.append(row)
    cols = [("eval", "eval")] + [(m, m) for m in ("accuracy", "macro_f1", "mean_per_class_accuracy",
                                                  "mcc", "pearson", "spearman") if m in rows[0]]
    noisy = (f", {rec['noise']['train_noise']:.0%} {rec['noise']['kind']} training-label noise"
             if rec["noise"]["train_noise"] else "")
    click.echo(f"{method} on {rec['train']['name']}{noisy}, {seeds} seeds (mean ± sample std, %):")
    click.echo(table(rows, cols))
    if results:
        click.echo(f"appended to {results}")


def _echo_selection(sel: dict) -> None:
    """The grid's validation scores, the chosen point marked."""
    metric, val = sel["metric"], sel["val"]
    where = (f"{val['fraction']:g} of train carved (stratified, seed {val['split_seed']})"
             if val["source"] != "store" else f"store {val['name']} [{val['key'][:8]}]")
    click.echo(f"validation {metric} ({where}, n={val['n']}), mean ± sample std over seeds:")
    scale = 1 if metric == "mse" else 100
    rows = [{"": "*" if i == sel["chosen_index"] else "",
             "point": " ".join(f"{k}={v}" for k, v in p["params"].items()) or "(defaults)",
             metric: f"{scale * p['val']['mean']:.2f} ± " + (
                 f"{scale * p['val']['std']:.2f}" if p["val"]["std"] is not None else "n/a")}
            for i, p in enumerate(sel["points"])]
    click.echo(table(rows, [("", ""), ("point", "grid point"), (metric, f"val {metric}")]))
    chosen = " ".join(f"{k}={v}" for k, v in sel["chosen"].items()) or "(defaults)"
    click.echo(f"chosen on validation {metric}: {chosen}\n")
