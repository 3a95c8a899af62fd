"""`featstore demo`: the main job end to end on built-in data."""

from __future__ import annotations

import click

from ..options import echo_json, json_option, table


@click.command(epilog="\b\nExamples:\n  featstore demo\n  featstore demo --root /tmp/demo --limit 500")
@click.option("--root", default="featstore-demo", show_default=True, help="Where the feature sets go.")
@click.option("--limit", type=int, default=None, help="Use N samples per split (a quicker run).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@json_option
def demo(root: str, limit: int | None, device: str, as_json: bool) -> None:
    """Extract EfficientNet-Lite0 features of MNIST-5k and UCI digits, then check them.

    Runs the backbone once per split (a rerun is a cache hit), lists what it stored,
    and fits a logistic-regression probe on the MNIST train features to show they are
    the pre-trained ones: in-domain (MNIST test) and out-of-domain (UCI digits).
    """
    from featstore.demo import run_demo

    summary = run_demo(root=root, limit=limit, device=device,
                       echo=None if as_json else click.echo)
    if as_json:
        echo_json(summary)
        return
    click.echo()
    click.echo(table(summary["stored"], [("key", "key"), ("dataset", "dataset"), ("split", "split"),
                                         ("shape", "N x D"), ("status", "status"),
                                         ("seconds", "seconds")]))
    click.echo()
    p = summary["probe"]
    click.echo(f"Logistic probe on frozen features (trained on mnist-5k/train, {p['n_train']} samples):")
    click.echo(f"  in-domain      mnist-5k/test     accuracy {p['id_accuracy']:.3f}")
    click.echo(f"  out-of-domain  uci-digits/test   accuracy {p['ood_accuracy']:.3f}")
    click.echo()
    click.echo(f"Feature sets are in {summary['root']}/  (inspect: featstore ls {summary['root']})")
