"""`featstore serve`, `featstore submit` and `featstore jobs`: the extraction service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from featstore_cli.options import echo_json, job_options, job_request, json_option, table

SERVE_EXAMPLES = """
\b
Examples:
  python -c "import secrets; print('alice:' + secrets.token_urlsafe(32))" > tokens.txt
  chmod 600 tokens.txt
  featstore serve --root features --tokens-file tokens.txt --devices cuda:0,cuda:1 \
                  --data-dir /data/datasets --data-dir /data/weights
  featstore serve --root features --tokens-file tokens.txt --devices cpu --port 9000 \
                  --limits image_size=512,batch_size=256
  featstore serve --root /shared/features --tokens-file tokens.txt --ray 10.0.0.5:6379
"""

SUBMIT_EXAMPLES = """
\b
Examples:
  export FEATSTORE_SERVER=http://127.0.0.1:8765 FEATSTORE_TOKEN=...
  featstore submit -b efficientnet-lite0 -d mnist-5k -s train -s test --image-size 112
  featstore submit -b timm:resnet50 -d ./images --wait
  featstore submit --config jobs.yaml --wait --json
"""

JOBS_EXAMPLES = """
\b
Examples:
  featstore jobs --server http://127.0.0.1:8765
  featstore jobs --state running --state queued
  featstore jobs --log 12
"""

server_option = click.option("--server", envvar="FEATSTORE_SERVER", default=None,
                             help="The service's URL, e.g. http://127.0.0.1:8765 "
                                  "[env: FEATSTORE_SERVER].")
token_file_option = click.option("--token-file", type=click.Path(dir_okay=False), default=None,
                                 help="File whose first line is your token [default: "
                                      "$FEATSTORE_TOKEN].")


@click.command(epilog=SERVE_EXAMPLES)
@click.option("-r", "--root", required=True,
              help="Root the workers extract into (a folder, or a URL such as s3://...).")
@click.option("--devices", default="auto", show_default=True,
              help="One worker per entry: auto (every GPU, else one CPU worker), cpu,cpu, "
                   "cuda:0,cuda:1.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but localhost needs a TLS proxy in front.")
@click.option("--port", type=int, default=8765, show_default=True, help="Port (0: any free one).")
@click.option("--tokens-file", type=click.Path(dir_okay=False), default=None,
              help="One 'name:token' a line (also read: $FEATSTORE_SERVICE_TOKENS="
                   "'name:token,...').")
@click.option("--queue", "queue_path", type=click.Path(dir_okay=False), default=None,
              help="The SQLite job queue [default: ROOT/.featstore/queue.sqlite; for a URL root "
                   "~/.cache/featstore/queue-HASH.sqlite].")
@click.option("--lease-seconds", type=float, default=30.0, show_default=True,
              help="A running job's lease; a worker silent this long loses its job.")
@click.option("--max-attempts", type=int, default=3, show_default=True,
              help="Attempts per job before it is marked failed.")
@click.option("--max-queue", type=int, default=1000, show_default=True,
              help="Queued jobs at most; more are refused with 503.")
@click.option("--max-per-token", type=int, default=50, show_default=True,
              help="Queued + running jobs per token at most; more are refused with 429.")
@click.option("--max-request-bytes", type=int, default=65536, show_default=True,
              help="Largest request body; larger ones are refused with 413.")
@click.option("--max-jobs-per-request", type=int, default=100, show_default=True,
              help="Jobs (backbones x data sets x splits) one request may make; more: 400.")
@click.option("--keep-backbones", type=int, default=3, show_default=True,
              help="Backbones a worker keeps loaded (least recently used ones are dropped).")
@click.option("--allow-plugin", "allow_plugins", multiple=True, metavar="MODULE",
              help="Allow `MODULE:function` backbone plugins from this module (repeatable). "
                   "Plugins run code on the server, so none are allowed by default.")
@click.option("--data-dir", "data_dirs", multiple=True, metavar="DIR",
              help="A folder jobs may read data sets, manifests, weights and hf:/st: model "
                   "folders from (repeatable; symlinks and '..' are resolved before the "
                   "check). Without it, jobs may use built-in data sets only.")
@click.option("--limits", "limits", multiple=True, metavar="NAME=MAX,...",
              help="Upper bounds of job options (repeatable), e.g. image_size=512,views=4. "
                   "Defaults: image_size=1024, views=16, batch_size=1024, chunk_rows=65536, "
                   "limit=10000000, num_workers=16.")
@click.option("--read-timeout", type=click.FloatRange(0.1, 300), default=5.0,
              show_default=True,
              help="Seconds a client may pause while sending a request; then 408.")
@click.option("--ray", "ray_address", default=None, metavar="ADDRESS",
              help="Run the workers as Ray actors on the cluster at ADDRESS (auto, HOST:PORT "
                   "or ray://HOST:PORT): --devices then names kinds (auto: one per GPU of the "
                   "cluster, else one per CPU; or cpu,cuda,...). ROOT and the --data-dir "
                   "folders must be shared by every node (same path) or be s3:// URLs.")
def serve(root: str, devices: str, host: str, port: int, tokens_file: str | None,
          queue_path: str | None, lease_seconds: float, max_attempts: int, max_queue: int,
          max_per_token: int, max_request_bytes: int, max_jobs_per_request: int,
          keep_backbones: int, allow_plugins: tuple[str, ...], data_dirs: tuple[str, ...],
          limits: tuple[str, ...], read_timeout: float, ray_address: str | None) -> None:
    """Run the extraction service: an HTTP JSON API, a persistent job queue and one
    worker process per device (with --ray: one Ray actor per device of a cluster), all
    extracting into ROOT.

    Jobs may name files only inside the --data-dir folders, and their options must
    stay within --limits.

    Jobs take the options of `featstore extract`; a job whose features are already in
    the root answers at once, and one equal to a queued or running job joins it. A
    worker that dies has its job resumed by another. Ctrl-C stops the workers cleanly.
    """
    from featstore.workflows.service.requests import parse_limits
    from featstore.workflows.service.config import (ServiceConfig, parse_devices,
                                                    parse_ray_devices)
    from featstore.workflows.service.server import Service
    from featstore.workflows.service.tokens import load_tokens, loose_permissions
    from featstore.store.location import check_cli_root

    check_cli_root(root, write=True)
    if ray_address is not None:  # before anything starts: a bad address or no Ray, one line
        from featstore.utils.cluster import check_address, require_ray

        ray_address = check_address(ray_address)
        require_ray()
    tokens = load_tokens(tokens_file)
    if tokens_file and loose_permissions(tokens_file):
        click.secho(f"Warning: {tokens_file} is readable by other users; `chmod 600 "
                    f"{tokens_file}`.", fg="yellow", err=True)
    workers = parse_ray_devices(devices) if ray_address else parse_devices(devices)
    cfg = ServiceConfig(root=root, tokens=tokens, devices=workers, host=host,
                        port=port, queue=queue_path, lease_seconds=lease_seconds,
                        max_attempts=max_attempts, max_queue=max_queue,
                        max_per_token=max_per_token, max_request_bytes=max_request_bytes,
                        max_jobs_per_request=max_jobs_per_request,
                        keep_backbones=keep_backbones, allow_plugins=tuple(allow_plugins),
                        data_dirs=tuple(data_dirs), limits=parse_limits(limits),
                        read_timeout=read_timeout, ray=ray_address)
    service = Service(cfg, say=click.echo,
                      warn=lambda m: click.secho(m, fg="yellow", err=True))
    service.run()


@click.command(epilog=SUBMIT_EXAMPLES)
@job_options
@server_option
@token_file_option
@click.option("--wait", is_flag=True, help="Wait until every job is done; print keys and paths.")
@click.option("--poll", type=float, default=1.0, show_default=True,
              help="Seconds between checks with --wait.")
@click.option("--timeout", type=float, default=None,
              help="Give up waiting after this many seconds.")
@json_option
def submit(config_file: str | None, fmt: str | None, random_weights: bool,
           text_column: str | None, image_column: str | None, label_column: str | None,
           id_column: str | None, server: str | None, token_file: str | None, wait: bool,
           poll: float, timeout: float | None, as_json: bool, **opts: Any) -> None:
    """Send an extraction job to a featstore service (see `featstore serve`).

    Takes the options of `featstore extract` (the root and device are the service's).
    One job is made per backbone x data set x split. Prints each job's id, or the key
    and path of a feature set the service already has; with --wait, the keys and paths
    once done (exit 1 with the reason if a job failed). Token: $FEATSTORE_TOKEN or
    --token-file.
    """
    from featstore.errors import ConfigError
    from featstore.workflows.service import client
    from featstore.workflows.service.errors import JobFailedError

    data = job_request(config_file, fmt, random_weights,
                       {"text_column": text_column, "image_column": image_column,
                        "label_column": label_column, "id_column": id_column}, opts)
    if not data.get("backbones") and not data.get("backbone"):
        raise ConfigError("submit needs --backbone (or 'backbones:' in --config).")
    if not data.get("datasets") and not data.get("dataset"):
        raise ConfigError("submit needs --dataset (or 'datasets:' in --config).")
    url = client.server_url(server)
    token = client.read_token(token_file)

    def show(job: dict[str, Any]) -> None:
        if as_json:
            return
        what = f"{job['backbone']} {_short(job['dataset'])}/{job['split']}"
        if job.get("state") == "done":
            click.echo(f"{'cached' if job.get('status') == 'cached' else 'done':8s} "
                       f"{job['key']}  {what} -> {job['path']}")
        elif job.get("state") == "failed":
            click.echo(f"{'failed':8s} job {job['id']}  {what}: {job.get('error')}")
        else:
            click.echo(f"{job['status']:8s} job {job['id']}  {what}")

    jobs = client.submit(url, data, token=token)
    for job in jobs:
        show(job)
    if not wait:
        if as_json:
            echo_json(jobs)
        elif any(j.get("state") != "done" for j in jobs):
            click.echo(f"Follow with: featstore jobs --server {url}", err=True)
        return
    if not as_json and any(j.get("state") != "done" for j in jobs):
        click.echo("Waiting for the jobs to finish (Ctrl-C stops waiting, not the jobs)...",
                   err=True)
    def show_finished(job: dict[str, Any]) -> None:
        if job["status"] != "cached":  # those were printed above
            show(job)

    try:
        done = client.wait_for(url, jobs, token=token, poll=poll, timeout=timeout,
                               on_update=show_finished)
    except JobFailedError as err:
        if as_json:
            echo_json(err.jobs)
        raise
    if as_json:
        echo_json(done)


@click.command(epilog=JOBS_EXAMPLES)
@server_option
@token_file_option
@click.option("--state", "states", multiple=True,
              help="Only jobs in this state (repeatable): queued, running, done, failed.")
@click.option("--log", "log_id", type=int, default=None, help="Print this job's log instead.")
@click.option("--limit", type=click.IntRange(1, 100000), default=None,
              help="The newest N jobs [default: 500].")
@json_option
def jobs(server: str | None, token_file: str | None, states: tuple[str, ...], log_id: int | None,
         limit: int | None, as_json: bool) -> None:
    """Show a featstore service's jobs: state, progress, attempts, worker and errors."""
    from featstore.workflows.service import client

    url = client.server_url(server)
    token = client.read_token(token_file)
    if log_id is not None:
        if as_json:
            echo_json({"id": log_id, "log": client.job_log(url, log_id, token=token)})
        else:
            click.echo(client.job_log(url, log_id, token=token).rstrip("\n"))
        return
    wanted = [s.strip() for v in states for s in v.split(",") if s.strip()]
    rows = client.list_jobs(url, token=token, states=wanted or None, limit=limit)
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"No jobs{' in state ' + ', '.join(wanted) if wanted else ''} at {url}.")
        return
    for r in rows:
        r["data"] = f"{_short(r['dataset'])}/{r['split']}"
        p = r.get("progress")
        r["chunks"] = f"{p['chunks_done']}/{p['chunks_total']}" if p else "-"
        r["tries"] = f"{r['attempts']}/{r['max_attempts']}"
        why = r.get("error") or (f"retrying: {r['last_error']}" if r.get("last_error")
                                 and r["state"] in ("queued", "running") else None)
        r["why"] = _clip(why, 70) if why else None
    click.echo(table(rows, [("id", "id"), ("state", "state"), ("backbone", "backbone"),
                            ("data", "dataset/split"), ("chunks", "progress"),
                            ("tries", "attempts"), ("worker", "worker"), ("key", "key"),
                            ("why", "error")]))


def _short(dataset: str) -> str:
    """A data set path's file name (built-in names unchanged)."""
    return Path(dataset).name if "/" in dataset or "\\" in dataset else dataset


def _clip(text: str, n: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"
