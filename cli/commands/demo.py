"""`featstore demo`: the main job end to end on built-in data."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option, table


@click.command(epilog="\b\nExamples:\n  featstore demo\n  featstore demo --root /tmp/demo --limit 500 --seeds 1")
@click.option("--root", default="featstore-demo", show_default=True, help="Where the feature sets go.")
@click.option("--limit", type=int, default=None, help="Use N samples per split (a quicker run).")
@click.option("--seeds", type=int, default=2, show_default=True, help="Seeds per tuner.")
@click.option("--epochs", type=int, default=30, show_default=True, help="Training epochs per head.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@json_option
def demo(root: str, limit: int | None, seeds: int, epochs: int, device: str, as_json: bool) -> None:
    """Extract EfficientNet-Lite0 features of MNIST-5k and UCI digits once, then train LP,
    MLP and NMTune heads on the cache (in-domain: MNIST test; out-of-domain: UCI digits),
    measure the feature spectra, and write a report."""
    from featstore.workflows.demo import run_demo

    s = run_demo(root=root, limit=limit, device=device, seeds=seeds, epochs=epochs,
                 echo=None if as_json else click.echo)
    if as_json:
        echo_json(s)
        return
    click.echo("\nStored feature sets (a rerun reuses them):")
    click.echo(table(s["stored"], [("key", "key"), ("dataset", "dataset"), ("split", "split"),
                                   ("shape", "N x D"), ("status", "status"), ("seconds", "seconds")]))
    click.echo(f"\nHeads trained on mnist-5k/train ({seeds} seeds; accuracy %, mean ± sample std; "
               "SVE/LSVR of the tuned features on the test split):")
    rows = []
    for method, summ in s["tuned"].items():
        ident, ood = (next(v for v in summ.values() if v["kind"] == k) for k in ("id", "ood"))
        rows.append({"method": method,
                     "id": _pm(ident["accuracy"]), "ood": _pm(ood["accuracy"]),
                     "sve": f"{ident['sve']['mean']:.3f}", "lsvr": f"{ident['lsvr']['mean']:.3f}"})
    click.echo(table(rows, [("method", "method"), ("id", "ID mnist-5k/test"),
                            ("ood", "OOD uci-digits/test"), ("sve", "SVE"), ("lsvr", "LSVR")]))
    click.echo("\nRaw-feature spectra: " + "; ".join(
        f"{k}: SVE {v['sve']:.3f}, LSVR {v['lsvr']:.3f}" for k, v in s["spectra"].items()))
    click.echo(f"\nReport: {s['report']['markdown']} (tables: .csv, .tex; plot: {s['report']['bars']})")


def _pm(stat: dict) -> str:
    """"mean ± sample std" in %; the std is None (n/a) with one seed."""
    sd = stat["std"]
    return f"{100 * stat['mean']:.2f} ± " + ("n/a" if sd is None else f"{100 * sd:.2f}")
