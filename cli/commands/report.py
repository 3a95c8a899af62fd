"""`featstore report`."""

from __future__ import annotations

import click

from featstore_cli.options import echo_json, json_option


@click.command(epilog="\b\nExamples:\n  featstore report results.jsonl --out report/\n  featstore report results.jsonl --metric macro_f1 --json\n  featstore report results.jsonl --grid   (every grid point of tune --select-on runs)")
@click.argument("results")
@click.option("--out", "out_dir", default="report", show_default=True, help="Folder for the report files.")
@click.option("--metric", default="accuracy", show_default=True,
              help="accuracy, macro_f1, mean_per_class_accuracy, mcc (pearson/spearman for regression).")
@click.option("--grid", "show_grid", is_flag=True,
              help="Also list every grid point of runs that chose a configuration on "
                   "validation (`tune --grid ... --select-on val`), not only the chosen one.")
@json_option
def report(results: str, out_dir: str, metric: str, show_grid: bool, as_json: bool) -> None:
    """Tables (Markdown, CSV, LaTeX) in the shape of the paper's Table 2 and a bar plot,
    from a results file written by `featstore tune --results`."""
    from featstore.workflows.report import (markdown_table, read_results, results_table,
                                            rows_markdown, selection_rows, write_report)

    paths = write_report(results, out_dir, metric, grid=show_grid)
    if as_json:
        echo_json(paths)
        return
    records = read_results(results)
    click.echo(markdown_table(results_table(records, metric)))
    chosen = selection_rows(records, every_point=show_grid)
    if chosen:
        click.echo("\n" + ("Every grid point" if show_grid else "Selected configurations")
                   + " (on validation):")
        click.echo(rows_markdown(chosen))
    click.echo(f"\nreport: {paths['markdown']}  (also {paths['csv']}, {paths['latex']}, {paths['bars']})")
