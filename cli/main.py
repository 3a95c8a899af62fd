"""The `featstore` command: a lazy click group (each command imported only when run)."""

from __future__ import annotations

import errno
import importlib
import logging
import sys
from typing import Any

import click

# name -> (module:attribute, one-line help shown by `featstore --help` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("featstore_cli.commands.demo:demo", "Run the main job end to end on built-in data."),
    "extract": ("featstore_cli.commands.extract:extract", "Run backbones over data sets into a root."),
    "ls": ("featstore_cli.commands.ls:ls", "List the feature sets in a root."),
    "info": ("featstore_cli.commands.info:info", "Show one feature set's metadata and shape."),
    "verify": ("featstore_cli.commands.verify:verify", "Check a feature set's chunk checksums."),
    "rm": ("featstore_cli.commands.rm:rm", "Remove feature sets from a root."),
    "tune": ("featstore_cli.commands.tune:tune", "Train LP/MLP/NMTune heads on cached features."),
    "spectrum": ("featstore_cli.commands.spectrum:spectrum", "SVE, LSVR and the singular value spectrum of stores."),
    "report": ("featstore_cli.commands.report:report", "Tables and plots from a tune results file."),
    "eval": ("featstore_cli.commands.heads:eval_cmd", "Score a saved head on labelled stores."),
    "predict": ("featstore_cli.commands.heads:predict", "Predict with a saved head on a store."),
    "sweep": ("featstore_cli.commands.sweep:sweep", "Run a resumable grid of tuning runs in parallel."),
    "noise": ("featstore_cli.commands.noise:noise", "Write a manifest copy with seeded label or caption noise."),
    "pretrain": ("featstore_cli.commands.pretrain:pretrain", "Pre-train a timm model on clean or noisy labels."),
    "experiment": ("featstore_cli.commands.experiment:experiment", "Run a built-in experiment end to end (noisy-pretraining)."),
    "copy": ("featstore_cli.commands.copy:copy", "Copy feature sets between roots (local, shared, s3://...)."),
    "pack": ("featstore_cli.commands.copy:pack", "Pack feature sets into one zip file."),
    "unpack": ("featstore_cli.commands.copy:unpack", "Unpack a zip made by `featstore pack` into a root."),
    "serve": ("featstore_cli.commands.service:serve", "Run the extraction service (HTTP, job queue, workers)."),
    "submit": ("featstore_cli.commands.service:submit", "Send an extraction job to a featstore service."),
    "jobs": ("featstore_cli.commands.service:jobs", "Show a featstore service's queue, progress and logs."),
    "backbones": ("featstore_cli.commands.backbones:backbones", "List built-in backbones and spec schemes."),
    "datasets": ("featstore_cli.commands.datasets:datasets", "List or fetch built-in data sets."),
}


#: ``ctx.meta`` key: a command run with ``--json`` sets it to a dict (what it finished
#: before failing, say) so that a failure also prints one JSON object on stdout,
#: ``{"error": {"type", "message", "exit_code"}, **that dict}``; the message still goes
#: to stderr and the exit code stays non-zero.
JSON_ERRORS = "featstore.json_errors"


def _json_error(ctx: click.Context, err: BaseException, message: str, code: int) -> None:
    """Under ``--json`` (see :data:`JSON_ERRORS`): the failure as JSON on stdout."""
    extra = ctx.meta.get(JSON_ERRORS)
    if extra is not None:
        from featstore_cli.options import echo_json

        echo_json({"error": {"type": type(err).__name__, "message": message,
                             "exit_code": code}, **extra})


def _fail(ctx: click.Context, err: BaseException, message: str, code: int = 1, *,
          shown: str | None = None) -> None:
    """Report a failure on stderr (``shown``, default ``Error: message`` in red) and under
    ``--json`` on stdout; then exit with ``code``."""
    _json_error(ctx, err, message, code)
    if shown is None:
        click.secho(f"Error: {message}", err=True, fg="red")
    else:
        click.echo(shown, err=True)
    ctx.exit(code)


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (``--help`` stays instant)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        # The one place where library errors become a message and an exit code.
        from featstore.errors import FeatstoreError

        try:
            return super().invoke(ctx)
        except FeatstoreError as err:
            _fail(ctx, err, str(err), err.exit_code if err.exit_code else 1)
        except click.exceptions.Exit:
            raise
        except Exception as err:
            # Remote storage (credentials, permissions, buckets) explained without a traceback.
            from featstore.store.location import explain_storage_error

            message = explain_storage_error(err) or _explain_botocore(err) or _explain_os_error(err)
            if message is None:
                if not isinstance(err, click.ClickException):  # a bug: JSON, then the traceback
                    _json_error(ctx, err, str(err), 1)
                raise
            logging.getLogger("featstore").debug("user error", exc_info=True)  # -vv shows it
            _fail(ctx, err, message, 1)
        except KeyboardInterrupt as err:
            message = "Interrupted. Committed chunks are kept: rerun the same command to resume."
            _fail(ctx, err, message, 130, shown="\n" + message)


#: Local file errors a user causes and fixes (a path, a permission, a full disk), by errno.
OS_HINTS = {
    errno.EACCES: "Choose a location you can write to, or fix its permissions.",
    errno.EPERM: "Choose a location you can write to, or fix its permissions.",
    errno.EROFS: "That file system is read-only: choose a writable location.",
    errno.ENOSPC: "The disk is full: free space, or choose another location.",
    errno.EDQUOT: "The disk quota is exhausted: free space, or choose another location.",
    errno.EISDIR: "That path is a folder: give a file path.",
    errno.ENOTDIR: "A part of that path is a file, not a folder: check the path.",
    errno.EEXIST: "A file is in the way of a folder to be made there: check the path.",
    errno.ENOENT: "Check the path.",
    errno.ENAMETOOLONG: "Use a shorter path.",
}


def _explain_os_error(err: BaseException) -> str | None:
    """The last resort for a local file error no command explained: one line, not a
    traceback (which stays in the log at -vv)."""
    if isinstance(err, OSError) and err.filename and err.errno in OS_HINTS:
        return f"{err.strerror}: {err.filename}. {OS_HINTS[err.errno]}"
    return None


def _explain_botocore(err: BaseException) -> str | None:
    from featstore.store.location import explain_storage_error

    cause = err.__cause__ or err.__context__
    return explain_storage_error(cause) if cause is not None else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="featstore")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """featstore: run each frozen backbone once, keep its features, tune on the cache.

    \b
    Start with the demo:   featstore demo
    Extract features:      featstore extract --backbone efficientnet-lite0 --dataset mnist-5k --root features
    See what a root holds: featstore ls features
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":  # pragma: no cover
    cli()
