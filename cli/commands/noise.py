"""`featstore noise`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option

EXAMPLES = """
\b
Examples:
  featstore noise train.csv --ratio 0.2 --out train-noisy20.csv
  featstore noise train.jsonl --ratio 0.1 --kind pairflip --transition 3:8,7:1 --out t.jsonl
  featstore noise pairs.csv --ratio 0.3 --kind caption-swap --text-column caption --out p.csv
"""


@click.command(epilog=EXAMPLES)
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--ratio", type=float, required=True, help="Fraction of samples to corrupt, in [0, 1).")
@click.option("--kind", type=click.Choice(["symmetric", "symmetric-all", "pairflip", "caption-swap"]),
              default="symmetric", show_default=True,
              help="symmetric: exactly round(r·N) labels become another class; symmetric-all: "
                   "re-drawn from all classes (flip rate r·(1−1/C)); pairflip: class c → "
                   "--transition[c] (default c+1); caption-swap: captions exchanged.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", required=True, type=click.Path(dir_okay=False),
              help="New manifest (same format family: .csv/.tsv/.jsonl/.parquet).")
@click.option("--label-column", default="label", show_default=True)
@click.option("--text-column", default=None, help="Caption column for caption-swap [text/caption/...].")
@click.option("--transition", default=None, help="pairflip classes SRC:DST,SRC:DST (default: c → c+1).")
@click.option("--split", default="train", show_default=True,
              help="With a 'split' column: corrupt only these rows (the others stay clean).")
@click.option("--force", is_flag=True, help="Replace --out if it exists (never the input).")
@click.option("--encoding", default=None,
              help="Text encoding of a CSV/TSV/JSONL MANIFEST, e.g. latin-1 [default: UTF-8, "
                   "with or without a byte-order mark]; --out is written as UTF-8.")
@json_option
def noise(manifest: str, ratio: float, kind: str, seed: int, out: str, label_column: str,
          text_column: str | None, transition: str | None, split: str, force: bool,
          encoding: str | None, as_json: bool) -> None:
    """Write a copy of MANIFEST with seeded label (or caption) noise: the noisy value in
    the original column, the clean one in clean_<column>, and an is_noisy column."""
    from featstore.data.noisy_manifest import write_noisy_manifest
    from featstore.data.noise import parse_transition

    rec = write_noisy_manifest(manifest, out, ratio=ratio, kind=kind, seed=seed,
                               label_column=label_column, text_column=text_column,
                               transition=parse_transition(transition), split=split, force=force,
                               encoding=encoding)
    if as_json:
        echo_json(rec)
        return
    where = f" {split!r} rows" if rec["split"] else ""
    click.echo(f"{kind} noise, ratio {ratio}, seed {seed}: {rec['n_noisy']} of {rec['n_target']}{where} "
               f"{rec['column']!r} values changed ({rec['noisy_fraction']:.2%}) -> {out}")
    click.echo(f"provenance: {out}.noise.json")
