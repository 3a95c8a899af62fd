"""`featstore report`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option


@click.command(epilog="\b\nExamples:\n  featstore report results.jsonl --out report/\n  featstore report results.jsonl --metric macro_f1 --json")
@click.argument("results")
@click.option("--out", "out_dir", default="report", show_default=True, help="Folder for the report files.")
@click.option("--metric", default="accuracy", show_default=True,
              help="accuracy, macro_f1, mean_per_class_accuracy, mcc (pearson/spearman for regression).")
@json_option
def report(results: str, out_dir: str, metric: str, as_json: bool) -> None:
    """Tables (Markdown, CSV, LaTeX) in the shape of the paper's Table 2 and a bar plot,
    from a results file written by `featstore tune --results`."""
    from featstore.workflows.report import markdown_table, read_results, results_table, write_report

    paths = write_report(results, out_dir, metric)
    if as_json:
        echo_json(paths)
        return
    click.echo(markdown_table(results_table(read_results(results), metric)))
    click.echo(f"\nreport: {paths['markdown']}  (also {paths['csv']}, {paths['latex']}, {paths['bars']})")
