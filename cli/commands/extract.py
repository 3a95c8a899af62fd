"""`featstore extract`."""

from __future__ import annotations

from typing import Any

import click

from featstore_cli.options import device_option, echo_json, job_options, job_request, json_option, table

EXAMPLES = """
\b
Examples:
  featstore extract --backbone efficientnet-lite0 --dataset mnist-5k --split train --split test --root features --image-size 112
  featstore extract --backbone timm:resnet50 --weights rn50.safetensors --dataset ./images --root features
  featstore extract --backbone all-minilm-l6-v2 --dataset rotten-tomatoes --split train --root features
  OPENAI_BASE_URL=http://127.0.0.1:8000/v1 featstore extract --backbone openai:text-embedding-3-small --dataset reviews.csv --concurrency 8
  featstore extract --config jobs.yaml
"""


def api_options(f: Any) -> Any:
    """Options of embedding-API backbones (openai:MODEL); other backbones refuse them."""
    o = click.option
    for option in reversed([
        o("--dimensions", type=int, default=None,
          help="Embedding APIs: the API's `dimensions` (shorter embeddings); changes the "
               "values, so it is part of the key."),
        o("--texts-per-request", type=int, default=None,
          help="Embedding APIs: most texts in one request [default: 256]."),
        o("--concurrency", type=int, default=None,
          help="Embedding APIs: requests in flight at once [default: 4]."),
        o("--requests-per-minute", type=float, default=None,
          help="Embedding APIs: client-side rate limit [default: none]."),
        o("--max-retries", type=int, default=None,
          help="Embedding APIs: retries of one request (429, 5xx, timeouts) [default: 6]."),
        o("--request-timeout", type=float, default=None,
          help="Embedding APIs: seconds to wait for one answer [default: 30]."),
        o("--check-model", is_flag=True, default=None,
          help="Embedding APIs: probe the model behind a cache hit and refuse the hit if "
               "it changed since the set was written."),
    ]):
        f = option(f)
    return f


@click.command(epilog=EXAMPLES)
@job_options
@click.option("-r", "--root", default=None,
              help="Folder or URL (s3://...) holding the feature sets [default: features].")
@device_option
@click.option("--force", is_flag=True, default=None, help="Re-extract even if the key is cached.")
@click.option("--lease-seconds", type=float, default=None,
              help="How long a writer's claim on a key lasts without renewal; another "
                   "writer of the same key waits, and takes over after this if the first "
                   "died [default: 60].")
@click.option("--ray", "ray", default=None, metavar="ADDRESS",
              help="Compute the chunks on a Ray cluster (auto, HOST:PORT or ray://HOST:PORT): "
                   "one actor per GPU or CPU slot, writing into the same --root, which every "
                   "node must reach. Zarr only. See docs/scale-out.md.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch threads per worker, pinned and recorded (the thread count can "
                   "change the last bits) [default: torch's; 1 per actor with --ray].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--precision", type=click.Choice(["float32", "bfloat16", "float16"]), default=None,
              help="Forward pass precision: float32, or autocast to bfloat16 (CUDA, or a CPU "
                   "with native bfloat16) or float16 (CUDA). Changes the values: part of the "
                   "key unless float32 [default: float32].")
@click.option("--compile", "compile", is_flag=True, default=None,
              help="torch.compile the forward pass (pays on long runs on a GPU; the first "
                   "batches wait for the compiler). Recorded in the metadata, not the key.")
@click.option("--length-buckets/--no-length-buckets", "length_buckets", default=None,
              help="Text: batch a chunk's texts of similar token length together, so each "
                   "batch pads only to its own longest (same key; the last float bits may "
                   "differ from file-order batches) [default: on].")
@click.option("--server", default=None, metavar="URL",
              help="Send the work to the `featstore serve` service at URL and wait for it; "
                   "the service's root holds the results. Token from $FEATSTORE_TOKEN or "
                   "--token-file.")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="With --server: a file holding the service token.")
@api_options
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
    from featstore_cli.main import JSON_ERRORS

    finished: list[dict[str, Any]] = []
    if as_json:  # a failure prints a JSON error too, with the sets finished before it
        click.get_current_context().meta[JSON_ERRORS] = {"results": finished}
    columns = {"text_column": text_column, "image_column": image_column,
               "label_column": label_column, "id_column": id_column}
    if no_progress:
        opts["progress"] = False
    data = job_request(config_file, fmt, random_weights, columns, opts)
    if server and data.get("ray"):
        raise ConfigError("--ray and --server exclude each other: a service runs its own "
                          "workers (`featstore serve --ray ADDRESS`).")
    if server:
        return _extract_on_server(server, token_file, data, as_json)
    data.setdefault("root", "features")
    from featstore.store.location import check_cli_root

    check_cli_root(data["root"], write=True)  # before any model is loaded
    if not data.get("backbones") and not data.get("backbone"):
        raise ConfigError("extract needs --backbone (or 'backbones:' in --config). "
                          "See `featstore backbones` for the names.")
    if not data.get("datasets") and not data.get("dataset"):
        raise ConfigError("extract needs --dataset (or 'datasets:' in --config). "
                          "See `featstore datasets` for the built-in names.")
    cfg = ExtractConfig.from_dict(data)
    from featstore.backbones import resolve_backbone

    for spec in cfg.backbones:  # a mistyped spec is reported before any data set is read
        resolve_backbone(spec)

    def report(r: Any) -> None:
        finished.append(r.as_dict())
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
    from featstore.workflows.service import client

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
