"""`featstore spectrum`."""

from __future__ import annotations

import click

from ..options import echo_json, json_option

EXAMPLES = """
\b
Examples:
  featstore spectrum features/a96c --plot spectrum.png
  featstore spectrum features/a96c --head heads/nmtune --preprocessing center --json
"""


@click.command(epilog=EXAMPLES)
@click.argument("stores", nargs=-1, required=True)
@click.option("--preprocessing", type=click.Choice(["l2", "none", "center", "l2-rowmean"]),
              default="l2", show_default=True,
              help="Row L2 (default), none, column centring, or the authors' L2 then row-mean.")
@click.option("--plot", "plot_path", default=None, help="Write a PNG of the spectra here.")
@json_option
def spectrum(stores: tuple[str, ...], preprocessing: str, plot_path: str | None, as_json: bool) -> None:
    """Singular values of STORES' features (exact, streamed through a float64 Gram
    matrix): SVE, LSVR, effective rank and top-k energy."""
    from featstore.analysis.spectrum import spectrum_of_store
    from featstore.store import open_store

    results = []
    for s in stores:
        with open_store(s) as fs:
            sp = spectrum_of_store(fs, preprocessing)
            name = f"{fs.metadata['backbone'].get('id')} {fs.metadata['dataset']['name']}/{fs.metadata['dataset']['split']}"
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
