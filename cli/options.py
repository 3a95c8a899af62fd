"""Options shared by several commands, and output helpers."""

from __future__ import annotations

import json
from typing import Any, Callable

import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON instead of a table.")
device_option = click.option("--device", default="auto", show_default=True,
                             help="auto (CUDA when present), cpu, cuda or cuda:N.")


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]],
          fmt: dict[str, Callable[[Any], str]] | None = None) -> str:
    """A plain aligned text table: ``columns`` are (key, header) pairs."""
    fmt = fmt or {}
    cells = [[h for _, h in columns]]
    for r in rows:
        cells.append([fmt.get(k, lambda v: "-" if v is None else str(v))(r.get(k)) for k, _ in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- what an extraction job is: shared by `extract` and `submit` ----------------------
def _job_options() -> list[Any]:
    from featstore.backbones.registry import spec_forms
    from featstore.data import PATH_KINDS, list_datasets

    o = click.option
    return [
        o("-b", "--backbone", "backbones", multiple=True,
          help=f"Backbone spec (repeatable): {spec_forms()}. See `featstore backbones`."),
        o("-d", "--dataset", "datasets", multiple=True,
          help=f"Data set (repeatable): a built-in name ({', '.join(list_datasets())}) or a "
               f"path: {'; '.join(PATH_KINDS)}. See `featstore datasets`."),
        o("-s", "--split", "splits", multiple=True, help="Split(s) to extract [default: train]."),
        o("--config", "config_file", type=click.Path(dir_okay=False),
          help="YAML file with any of these options (lists for backbones/datasets/splits)."),
        o("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default=None,
          help="Store format [default: zarr]."),
        o("--dtype", type=click.Choice(["float16", "float32"]), default=None,
          help="Stored feature dtype [default: float16]."),
        o("--codec", type=click.Choice(["zstd", "blosc-zstd", "lz4", "none"]), default=None,
          help="Compression of the features array [default: zstd]."),
        o("--chunk-rows", type=int, default=None, help="Rows per stored chunk [default: 1024]."),
        o("--batch-size", type=int, default=None, help="Samples per forward pass [default: 64]."),
        o("--workers", "num_workers", type=int, default=None,
          help="DataLoader decode workers [default: 0 on a 2-core CPU, more with more cores "
               "or a GPU]."),
        o("--views", type=int, default=None,
          help="Augmented views per sample (needs --augment train)."),
        o("--augment", type=click.Choice(["none", "train"]), default=None,
          help="train: the backbone's training augmentation, seeded per sample and view."),
        o("--seed", type=int, default=None, help="Seed of augmentation and --limit [default: 0]."),
        o("--weights", type=click.Path(dir_okay=False), default=None,
          help="Weights file (.safetensors or a torch state dict, read with weights_only=True)."),
        o("--random-weights", is_flag=True,
          help="Random weights instead of pre-trained (baselines)."),
        o("--image-size", type=int, default=None, help="Override the input resolution."),
        o("--pooling", default=None,
          help="Pooling: timm global_pool; cls|mean|last for hf: text models."),
        o("--limit", type=int, default=None, help="Extract a seeded subset of N samples per split."),
        o("--text-column", default=None, help="Manifest column holding the text."),
        o("--image-column", default=None, help="Manifest column holding image paths."),
        o("--label-column", default=None, help="Manifest column holding the label."),
        o("--id-column", default=None, help="Manifest column holding sample ids."),
        o("--encoding", default=None,
          help="Text encoding of CSV/TSV/JSONL manifests, e.g. latin-1 or cp1252 [default: "
               "UTF-8, with or without a byte-order mark]."),
        o("--strict", is_flag=True, default=None, help="Fail on the first unreadable sample."),
    ]


def job_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options of one extraction request (`extract`, `submit`)."""
    for option in reversed(_job_options()):
        f = option(f)
    return f


def job_request(config_file: str | None, fmt: str | None, random_weights: bool,
                columns: dict[str, str | None], opts: dict[str, Any]) -> dict[str, Any]:
    """The request as a mapping for ExtractConfig: the --config file, then the flags given."""
    from featstore.utils.yaml_files import read_mapping

    data = read_mapping(config_file, "extract config", "'backbones: [...]'") if config_file else {}
    # --encoding is how the data set is read, like the column names: a data set option
    columns = {**columns, "encoding": opts.pop("encoding", None)}
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    values = {k: v for k, v in values.items() if v not in (None, [], ())}
    if fmt:
        values["format"] = fmt
    if random_weights:
        values["pretrained"] = False
    given = {k: v for k, v in columns.items() if v}
    if given:
        values["dataset_options"] = {**data.get("dataset_options", {}), **given}
    data.update(values)
    return data
