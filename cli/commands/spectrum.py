"""`featstore spectrum`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option

EXAMPLES = """
\b
Examples:
  featstore spectrum features/a96c --plot spectrum.png
  featstore spectrum features/a96c --head heads/nmtune --preprocessing center --json
  featstore spectrum s3://bucket/features/a96c --ray auto   (Gram reduction on a Ray cluster)
"""


@click.command(epilog=EXAMPLES)
@click.argument("stores", nargs=-1, required=True)
@click.option("--preprocessing", type=click.Choice(["l2", "none", "center", "l2-rowmean"]),
              default="l2", show_default=True,
              help="Row L2 (default), none, column centring, or the authors' L2 then row-mean.")
@click.option("--head", default=None,
              help="A saved head (from `tune --save-heads`): analyse its tuned features z instead.")
@click.option("--plot", "plot_path", default=None, help="Write a PNG of the spectra here.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Compute the chunks' Gram matrices on a Ray cluster (auto, HOST:PORT or "
                   "ray://HOST:PORT), summed here in chunk order: the same bits as without "
                   "--ray. The stores must be readable from every worker (a shared folder or "
                   "s3://). Needs `pip install 'featstore[ray]'`.")
@json_option
def spectrum(stores: tuple[str, ...], preprocessing: str, head: str | None, plot_path: str | None,
             ray_address: str | None, as_json: bool) -> None:
    """Singular values of STORES' features (exact, streamed through a float64 Gram
    matrix): SVE, LSVR, effective rank and top-k energy. With --head, of the tuned
    features z = head(f), computed chunk by chunk."""
    from featstore.analysis.spectrum import spectrum_of_blocks, spectrum_of_store
    from featstore.store import open_store

    est = None
    if head and ray_address:
        raise click.UsageError("--ray computes the spectrum of stored features; the tuned "
                               "features of --head are computed here. Leave out one of them.")
    if ray_address:
        from featstore.utils.cluster import connect

        connect(ray_address)  # fails early, with the install hint, before any store is read
    if head:
        from featstore.workflows.tuning import load_head

        est = load_head(head)
        if not hasattr(est, "model_"):
            raise click.UsageError("--head takes an LP/MLP/NMTune head saved by `tune --save-heads`.")
    results = []
    for s in stores:
        with open_store(s) as fs:
            if est is None and ray_address:
                from featstore.analysis.gram_ray import spectrum_of_store_on_ray

                sp = spectrum_of_store_on_ray(str(fs.path), ray_address, preprocessing)
            elif est is None:
                sp = spectrum_of_store(fs, preprocessing)
            else:
                from featstore.utils.keys import backbone_key
                from featstore.tuners.batches import iter_store_rows

                est.check_backbone(backbone_key(fs.metadata))  # refuse another backbone up front
                sp = spectrum_of_blocks((est.transform(x) for x in iter_store_rows(fs)), preprocessing)
            name = f"{fs.metadata['backbone'].get('id')} {fs.metadata['dataset']['name']}/{fs.metadata['dataset']['split']}"
            if est is not None:
                name += f" → z of {head}"
        results.append((name, str(fs.path), sp))
    if plot_path:
        from featstore.analysis.plots import plot_spectra

        plot_spectra([(n, sp.sigma) for n, _, sp in results], plot_path,
                     title=f"Singular value spectrum ({preprocessing})")
    if as_json:
        echo_json([{"name": n, "path": p, **sp.as_dict()} for n, p, sp in results])
        return
    for n, p, sp in results:
        top = ", ".join(f"top{k} {v:.3f}" for k, v in sp.top_k_energy.items())
        click.echo(f"{n}\n  {p}\n  SVE {sp.sve:.4f}  LSVR {sp.lsvr:.4f}  effective rank "
                   f"{sp.effective_rank:.1f}  ({sp.n_rows} rows x {sp.n_features}, {preprocessing})\n"
                   f"  energy: {top}")
    if plot_path:
        click.echo(f"plot: {plot_path}")
