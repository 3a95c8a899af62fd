"""`featstore experiment`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option

EXAMPLES = """
\b
Examples:
  featstore experiment noisy-pretraining --quick
  featstore experiment noisy-pretraining --root runs/np --seeds 5
  featstore experiment noisy-pretraining --model timm:resnet18 --pretrain-limit 60000 --pretrain-epochs 30 --device cuda
"""


def _ratios(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) / 100 for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected percentages separated by commas, e.g. 0,5,10,20,30; got {value!r}")


@click.command(epilog=EXAMPLES)
@click.argument("name", type=click.Choice(["noisy-pretraining"]))
@click.option("--quick", is_flag=True, help="The small size CI runs (a few minutes on 2 CPU cores).")
@click.option("--root", default=None, help="Folder for weights, features, results and report "
              "[default: noisy-pretraining, or noisy-pretraining-quick with --quick].")
@click.option("--model", default=None, help="timm:NAME to pre-train [default: timm:test_resnet].")
@click.option("--ratios", callback=_ratios, default=None,
              help="Noise ratios in %, comma-separated [default: 0,5,10,20,30; quick: 0,30].")
@click.option("--pretrain-limit", type=int, default=None, help="Fashion-MNIST training images.")
@click.option("--pretrain-epochs", type=int, default=None)
@click.option("--seeds", type=int, default=None, help="Tuning seeds [default 3; quick 1].")
@click.option("--tune-epochs", type=int, default=None)
@click.option("--device", default=None, help="auto, cpu, cuda or cuda:N [default: auto].")
@json_option
def experiment(name: str, quick: bool, root: str | None, model: str | None,
               ratios: tuple[float, ...] | None, pretrain_limit: int | None,
               pretrain_epochs: int | None, seeds: int | None, tune_epochs: int | None,
               device: str | None, as_json: bool) -> None:
    """Run a built-in experiment end to end. noisy-pretraining: pre-train on Fashion-MNIST
    at several label-noise ratios, extract MNIST-5k and UCI digits, tune LP/MLP/NMTune ID
    and OOD, spectra, report. Every step is cached: a rerun computes only what is new."""
    from featstore.workflows.experiments import NoisyPretraining, run_noisy_pretraining

    size = "quick" if quick else "default"
    exp = NoisyPretraining.sized(size, root=root or ("noisy-pretraining-quick" if quick else "noisy-pretraining"),
                                 model=model, ratios=ratios, pretrain_limit=pretrain_limit,
                                 pretrain_epochs=pretrain_epochs, seeds=seeds,
                                 tune_epochs=tune_epochs, device=device)
    out = run_noisy_pretraining(exp, echo=None if as_json else click.echo)
    if as_json:
        echo_json(out)
        return
    click.echo(f"report: {out['report']['markdown']}")
