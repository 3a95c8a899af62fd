"""`featstore extract`."""

from __future__ import annotations

from typing import Any

import click

from ..options import device_option, echo_json, json_option, table

EXAMPLES = """
\b
Examples:
  featstore extract --backbone efficientnet-lite0 --dataset mnist-5k --split train --split test --root features --image-size 112
  featstore extract --backbone timm:resnet50 --weights rn50.safetensors --dataset ./images --root features
  featstore extract --backbone all-minilm-l6-v2 --dataset rotten-tomatoes --split train --root features
  featstore extract --config jobs.yaml
"""


@click.command(epilog=EXAMPLES)
@click.option("-b", "--backbone", "backbones", multiple=True,
              help="Backbone spec (repeatable): a built-in name, timm:NAME, hf:PATH, st:PATH, "
                   "openai:MODEL or module:function. See `featstore backbones`.")
@click.option("-d", "--dataset", "datasets", multiple=True,
              help="Data set (repeatable): a built-in name, an image folder, a CSV/JSONL/Parquet "
                   "manifest, an IDX or .npz file, or a saved Hugging Face dataset.")
@click.option("-s", "--split", "splits", multiple=True, help="Split(s) to extract [default: train].")
@click.option("-r", "--root", default=None, help="Folder holding the feature sets [default: features].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False),
              help="YAML file with any of these options (lists for backbones/datasets/splits).")
@click.option("--format", "fmt", type=click.Choice(["zarr", "hdf5"]), default=None,
              help="Store format [default: zarr].")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default=None,
              help="Stored feature dtype [default: float16].")
@click.option("--codec", type=click.Choice(["zstd", "blosc-zstd", "lz4", "none"]), default=None,
              help="Compression of the features array [default: zstd].")
@click.option("--chunk-rows", type=int, default=None, help="Rows per stored chunk [default: 1024].")
@click.option("--batch-size", type=int, default=None, help="Samples per forward pass [default: 64].")
@device_option
@click.option("--workers", "num_workers", type=int, default=None,
              help="DataLoader decode workers [default: 0 on a 2-core CPU, more with more cores or a GPU].")
@click.option("--views", type=int, default=None, help="Augmented views per sample (needs --augment train).")
@click.option("--augment", type=click.Choice(["none", "train"]), default=None,
              help="train: the backbone's training augmentation, seeded per sample and view.")
@click.option("--seed", type=int, default=None, help="Seed of augmentation and --limit [default: 0].")
@click.option("--weights", type=click.Path(dir_okay=False), default=None,
              help="Local weights (.safetensors or a torch state dict, read with weights_only=True).")
@click.option("--random-weights", is_flag=True, help="Random weights instead of pre-trained (baselines).")
@click.option("--image-size", type=int, default=None, help="Override the input resolution.")
@click.option("--pooling", default=None, help="Pooling: timm global_pool; cls|mean|last for hf: text models.")
@click.option("--limit", type=int, default=None, help="Extract a seeded subset of N samples per split.")
@click.option("--text-column", default=None, help="Manifest column holding the text.")
@click.option("--image-column", default=None, help="Manifest column holding image paths.")
@click.option("--label-column", default=None, help="Manifest column holding the label.")
@click.option("--id-column", default=None, help="Manifest column holding sample ids.")
@click.option("--strict", is_flag=True, default=None, help="Fail on the first unreadable sample.")
@click.option("--force", is_flag=True, default=None, help="Re-extract even if the key is cached.")
@click.option("--lease-seconds", type=float, default=None,
              help="How long a writer's claim on a key lasts without renewal; another "
                   "writer of the same key waits, and takes over after this if the first "
                   "died [default: 60].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--server", default=None, metavar="URL",
              help="Send the work to the `featstore serve` service at URL and wait for it; "
                   "the service's root holds the results. Token from $FEATSTORE_TOKEN or "
                   "--token-file.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="With --server: a file holding the service token.")
@json_option
def extract(config_file: str | None, as_json: bool, no_progress: bool, random_weights: bool,
            server: str | None, token_file: str | None,
            fmt: str | None, text_column: str | None, image_column: str | None,
            label_column: str | None, id_column: str | None, **opts: Any) -> None:
    """Run each backbone once over data set splits and store the features in a root.

    A feature set already in the root (same content key) is a cache hit and returns at
    once; an interrupted one resumes from its last committed chunk. ROOT may be a
    folder, a shared file system or a URL (s3://bucket/features); two processes
    extracting one key compute it once (the second waits and reuses it).
    """
    from featstore.errors import ConfigError
    from featstore.extract import ExtractConfig, extract as run

    data: dict[str, Any] = {}
    if config_file:
        data = _read_config(config_file)
    cli_values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in opts.items()}
    cli_values = {k: v for k, v in cli_values.items() if v not in (None, [], ())}
    if fmt:
        cli_values["format"] = fmt
    if random_weights:
        cli_values["pretrained"] = False
    if no_progress:
        cli_values["progress"] = False
    columns = {"text_column": text_column, "image_column": image_column,
               "label_column": label_column, "id_column": id_column}
    columns = {k: v for k, v in columns.items() if v}
    if columns:
        cli_values["dataset_options"] = {**data.get("dataset_options", {}), **columns}
    data.update(cli_values)
    if server:
        return _extract_on_server(server, token_file, data, as_json)
    data.setdefault("root", "features")
    if not data.get("backbones") and not data.get("backbone"):
        raise ConfigError("extract needs --backbone (or 'backbones:' in --config). "
                          "See `featstore backbones` for the names.")
    if not data.get("datasets") and not data.get("dataset"):
        raise ConfigError("extract needs --dataset (or 'datasets:' in --config). "
                          "See `featstore datasets` for the built-in names.")
    cfg = ExtractConfig.from_dict(data)

    def report(r: Any) -> None:
        if not as_json:
            status = "cached" if r.cached else ("resumed" if r.resumed_chunks else "extracted")
            click.echo(f"{status:9s} {r.backbone} {r.dataset}/{r.split} -> {r.path} "
                       f"{'x'.join(map(str, r.shape))} ({r.seconds:.1f} s)")
            if r.n_invalid:
                ids = ", ".join(i["sample_id"] for i in r.invalid[:5])
                click.secho(f"  warning: {r.n_invalid} samples could not be read and are marked "
                            f"invalid (e.g. {ids}); see `featstore info {r.path}`.", fg="yellow",
                            err=True)

    results = run(cfg, on_result=report)
    if as_json:
        echo_json([r.as_dict() for r in results])
    elif len(results) > 1:
        click.echo()
        click.echo(table([r.as_dict() for r in results],
                         [("key", "key"), ("backbone", "backbone"), ("dataset", "dataset"),
                          ("split", "split"), ("shape", "shape"), ("n_invalid", "invalid"),
                          ("cached", "cached")],
                         {"shape": lambda s: "x".join(map(str, s))}))


def _extract_on_server(server: str, token_file: str | None, data: dict[str, Any],
                       as_json: bool) -> None:
    """`extract --server`: the same request, run by the service; wait and print the sets."""
    from featstore.errors import ConfigError
    from featstore.service import client

    if data.get("force"):
        raise ConfigError("--force cannot be sent to a service (it never deletes feature sets "
                          "others may use). Remove the set on the service's root with "
                          "`featstore rm`, then extract again.")
    if data.get("root") not in (None, "features"):
        click.secho(f"note: --root {data['root']} is ignored with --server; the service's "
                    "root holds the results.", fg="yellow", err=True)
    url = client.server_url(server)
    jobs = client.submit(url, data, token=client.read_token(token_file), wait=True)
    if as_json:
        echo_json(jobs)
        return
    for j in jobs:
        result = j.get("result") or {}
        status = "cached" if j.get("status") == "cached" or result.get("cached") else "extracted"
        shape = "x".join(map(str, result.get("shape") or []))
        dataset = result.get("dataset") or j.get("dataset")
        click.echo(f"{status:9s} {j.get('backbone')} {dataset}/{j.get('split')} -> "
                   f"{j.get('path')} {shape} (job {j.get('id')} on {url})")


def _read_config(path: str) -> dict[str, Any]:
    from featstore.yaml_files import read_mapping

    return read_mapping(path, "extract config", "'backbones: [...]'")
