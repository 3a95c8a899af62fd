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
@json_option
def tune(train: str, test: str, ood: tuple[str, ...], method: str, seeds: int, epochs: int | None,
         lr: float | None, batch_size: int | None, device: str | None, stream: str | None,
         train_noise: float | None, noise_kind: str | None, results: str | None,
         save_heads: str | None, as_json: bool) -> None:
    """Train a head (LP, MLP, NMTune, or logistic regression) on cached features over
    seeds, and evaluate it in-domain and out-of-domain. The backbone never runs.

    The same flags work in a loop over methods where they are harmless: logreg accepts
    --device cpu/auto and --stream auto/never; options it would silently ignore
    (--device cuda, --epochs, --lr, --batch-size, --stream always) are refused."""
    from featstore.workflows.tuning import tune as run

    params = {k: v for k, v in {"epochs": epochs, "lr": lr, "batch_size": batch_size,
                                "device": device, "stream": stream}.items() if v is not None}
    if noise_kind and not train_noise:
        from featstore.errors import ConfigError

        raise ConfigError("--noise-kind needs --train-noise RATIO.")
    params.update({k: v for k, v in {"train_noise": train_noise, "noise_kind": noise_kind}.items()
                   if v is not None})
    rec = run(train, test, list(ood), method, seeds=seeds, params=params, results=results,
              save_heads=save_heads)
    if as_json:
        echo_json(rec)
        return
    rows = []
    for name, s in rec["summary"].items():
        row = {"eval": f"{name} ({s['kind']})"}
        for metric in ("accuracy", "macro_f1", "mean_per_class_accuracy", "mcc", "pearson", "spearman"):
            if metric in s:
                row[metric] = f"{100 * s[metric]['mean']:.2f} ± {100 * s[metric]['std']:.2f}"
        rows.append(row)
    cols = [("eval", "eval")] + [(m, m) for m in ("accuracy", "macro_f1", "mean_per_class_accuracy",
                                                  "mcc", "pearson", "spearman") if m in rows[0]]
    noisy = (f", {rec['noise']['train_noise']:.0%} {rec['noise']['kind']} training-label noise"
             if rec["noise"]["train_noise"] else "")
    click.echo(f"{method} on {rec['train']['name']}{noisy}, {seeds} seeds (mean ± std, %):")
    click.echo(table(rows, cols))
    if results:
        click.echo(f"appended to {results}")
