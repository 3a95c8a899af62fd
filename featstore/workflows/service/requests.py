"""Job requests: a submitted body made into one :class:`ExtractConfig` per
(backbone, data set, split), each with a *request key*.

The options are checked by ExtractConfig itself (its rules and RANGES, the same for the
CLI, config files and the Python API); this module adds only what is the service's:
options it decides, the operator's bounds, data folders, split names and plugins.

A request key is :func:`featstore.extract.pipeline.request_key_inputs` hashed: the
extraction's own recipe, with local files named by absolute path, size and
modification time. It is known without loading a backbone or reading a data set, so
the server can answer at once: a finished job with the same request key is a cache
hit, a queued or running one is joined.

Every file a request names (data sets, manifests, weights, ``hf:``/``st:`` model
folders) must lie inside one of the service's data folders (``serve --data-dir``),
after symlinks and ``..`` are resolved; integer options must lie within the
operator's bounds (``serve --limits``).
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from featstore.utils import keys
from featstore.errors import ConfigError
from featstore.extract.config import RANGES, show
from featstore.workflows.service.errors import PathNotAllowedError

#: Options of `featstore extract` that the service decides, and why (the 400 says so).
SERVER_OWNED = {
    "root": "the service extracts into its own root (featstore serve --root)",
    "device": "each worker runs on its own device (featstore serve --devices)",
    "lease_seconds": "the service sets the writers' lease (featstore serve --lease-seconds)",
    "ray": "the service decides where its workers run (featstore serve --ray)",
    "threads": "each worker's thread count is the service's (featstore serve --devices)",
    "compile": ("torch.compile costs minutes of the workers' CPU per job; extract with "
                "--compile outside the service"),
    "requests_per_minute": ("embedding-API rate limits belong to the operator's API key: "
                            "the service uses the backbone's defaults"),
    "request_timeout": ("embedding-API timeouts are the service's: the service uses the "
                        "backbone's defaults"),
    "force": ("the service never deletes feature sets; remove one on the server with "
              "`featstore rm` and submit again"),
}
#: Accepted and ignored (a worker has no terminal).
IGNORED = ("progress",)
ALIASES = {"backbone": "backbones", "dataset": "datasets", "split": "splits"}
EXAMPLE = '{"backbones": ["efficientnet-lite0"], "datasets": ["mnist-5k"], "splits": ["train"]}'
#: Upper bounds of a service's integer options unless its operator sets others
#: (``serve --limits NAME=MAX``); every caller's ranges are ExtractConfig's RANGES.
DEFAULT_LIMITS: dict[str, int] = {"image_size": 1024, "views": 16, "batch_size": 1024,
                                  "chunk_rows": 65536, "limit": 10_000_000, "num_workers": 16,
                                  # embedding APIs: the operator's key pays for these
                                  "concurrency": 8, "texts_per_request": 2048,
                                  "max_retries": 10}
#: Longest split name a request may use.
MAX_SPLIT = 128


def parse_limits(specs: Iterable[str]) -> dict[str, int]:
    """``["image_size=512,views=4", ...]`` (``serve --limits``) over :data:`DEFAULT_LIMITS`;
    each maximum must lie within the option's range for every caller."""
    limits = dict(DEFAULT_LIMITS)
    for item in (p.strip() for spec in specs for p in spec.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in DEFAULT_LIMITS:
            raise ConfigError(f"--limits takes NAME=MAX pairs, NAME one of "
                              f"{', '.join(DEFAULT_LIMITS)}; got {show(item)}. "
                              "Example: --limits image_size=512,batch_size=256.")
        try:
            limits[name] = int(value.strip())
        except ValueError:
            limits[name] = -1
        if not RANGES[name].accepts(limits[name]):
            raise ConfigError(f"--limits {name}=MAX: MAX must be {RANGES[name]}; "
                              f"got {show(value.strip())}.")
    return limits


@dataclass(frozen=True)
class DataDirs:
    """The folders a service reads files from: the names its operator gave
    (``serve --data-dir``, shown in answers) and their real paths (checked against)."""

    names: tuple[str, ...] = ()
    real: tuple[str, ...] = ()

    @classmethod
    def resolve(cls, folders: Iterable[str], cwd: Path | None = None) -> "DataDirs":
        """The given folders; each must exist and be a folder."""
        cwd = cwd or Path.cwd()
        names, real = [], []
        for folder in folders:
            path = os.path.realpath(cwd / os.path.expanduser(folder))
            if not os.path.isdir(path):
                raise ConfigError(f"--data-dir {folder}: no such folder. Give a folder that "
                                  "holds the data sets, manifests and weights jobs may read.")
            names.append(str(folder))
            real.append(path)
        return cls(tuple(names), tuple(real))

    def confine(self, spec: str, option: str, cwd: Path,
                builtins: list[str] | None = None) -> Path:
        """The real path of ``spec`` (relative to ``cwd``), if it lies in a data folder;
        else :class:`PathNotAllowedError`, checked before the path is looked at."""
        also = f" is not a built-in ({', '.join(builtins)}) and" if builtins else ""
        if not self.real:
            raise PathNotAllowedError(
                f"The '{option}' {show(spec)}{also} is a path, and this service reads no "
                "files: it was started without --data-dir. Use a built-in data set, or ask "
                "its operator to allow a folder with `featstore serve --data-dir DIR`.")
        if "\0" in spec:
            raise ConfigError(f"The '{option}' {show(spec)} holds a NUL character; no path does.")
        real = os.path.realpath(cwd / os.path.expanduser(spec))
        if not any(os.path.commonpath([real, d]) == d for d in self.real):
            raise PathNotAllowedError(
                f"The '{option}' {show(spec)}{also} lies outside the folders this service may "
                f"read: {', '.join(self.names)} (featstore serve --data-dir; symlinks and '..' "
                "are resolved first). Give a path inside one of them.")
        return Path(real)


@dataclass
class JobRequest:
    """One (backbone, data set, split) job, ready for the queue."""

    config: dict[str, Any]       # ExtractConfig fields of this one job (no root, device, lease)
    request_key: str             # hash of the options that determine the values
    backbone_group: str          # hash of what create_backbone receives: jobs sharing a load
    backbone: str
    dataset: str
    split: str


def accepted_options() -> list[str]:
    """ExtractConfig fields a request may set."""
    from featstore.extract.config import ExtractConfig

    return sorted(f.name for f in fields(ExtractConfig) if f.name not in SERVER_OWNED)


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or :class:`ConfigError` saying what was expected."""
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"The request body is not UTF-8 (byte {err.start}). Expected a JSON "
                          f"object of extract options in UTF-8, e.g. {EXAMPLE}.") from None
    except RecursionError:
        raise ConfigError("The request body is JSON nested too deeply. Expected a flat JSON "
                          f"object of extract options, e.g. {EXAMPLE}.") from None
    except ValueError as err:
        raise ConfigError(f"The request body is not valid JSON ({err}). Expected a JSON object "
                          f"of extract options, e.g. {EXAMPLE}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The request body is JSON but a {type(data).__name__}, not an object. "
                          f"Expected a JSON object of extract options, e.g. {EXAMPLE}.")
    return data


def expand(options: dict[str, Any], root: str, *, cwd: Path | None = None,
           allow_plugins: tuple[str, ...] = (), max_jobs: int = 100,
           data_dirs: DataDirs = DataDirs(), limits: Mapping[str, int] | None = None
           ) -> list[JobRequest]:
    """Build the :class:`ExtractConfig` of ``options`` (as for `featstore extract`) and
    return one request per job.

    Relative paths are read from ``cwd`` (the server's working folder); every path must
    lie in ``data_dirs`` (none: only built-in data sets). Integer options must be within
    ``limits`` (:data:`DEFAULT_LIMITS` if None). Repeated backbones, data sets or splits
    count once; a request that would make more than ``max_jobs`` jobs is refused before
    any work. ``module:function`` plugins are accepted only from the modules in
    ``allow_plugins`` (they run code on the server). Raises :class:`ConfigError` (or its
    :class:`PathNotAllowedError`) with what was expected.
    """
    from featstore.extract.config import ExtractConfig

    cwd = cwd or Path.cwd()
    limits = DEFAULT_LIMITS if limits is None else limits
    data = _job_options(options)
    for name, high in limits.items():  # a default above the operator's bound: the bound
        default = ExtractConfig.__dataclass_fields__[name].default
        if name not in data and isinstance(default, int) and default > high:
            data[name] = high
    try:
        cfg = ExtractConfig.from_dict({**data, "root": root, "progress": False})
    except TypeError as err:  # a value of a type the dataclass cannot take
        raise ConfigError(f"Invalid job options: {err}. Expected e.g. {EXAMPLE}.") from err
    cfg.check_maxima(limits, why=" on this service (its operator sets the bounds with "
                                 "`featstore serve --limits NAME=MAX`)")
    for split in cfg.splits:
        _check_split(split)
    for name in ("backbones", "datasets", "splits"):
        setattr(cfg, name, list(dict.fromkeys(getattr(cfg, name))))  # repeats count once
    n_jobs = len(cfg.backbones) * len(cfg.datasets) * len(cfg.splits)
    if n_jobs > max_jobs:
        raise ConfigError(f"This request would make {n_jobs} jobs (backbones x data sets x "
                          f"splits); this service takes at most {max_jobs} per request "
                          "(serve --max-jobs-per-request). Send several smaller requests.")
    return _jobs(cfg, cwd, allow_plugins, data_dirs)


def _job_options(options: dict[str, Any]) -> dict[str, Any]:
    """The request's options by their ExtractConfig names, without the ones the service
    decides or ignores; what only a service refuses is refused here."""
    data = {ALIASES.get(str(k), str(k)).replace("-", "_"): v for k, v in options.items()}
    owned = sorted(set(data) & set(SERVER_OWNED))
    if owned:
        raise ConfigError(f"The option {owned[0]!r} cannot be set in a job: "
                          f"{SERVER_OWNED[owned[0]]}. Leave it out.")
    known = set(accepted_options())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Unknown option(s) {show(unknown)} in the job request. Expected "
                          f"options: {', '.join(sorted(known - set(IGNORED)))}.")
    for name in IGNORED:
        data.pop(name, None)
    for name, what in (("backbones", "backbone"), ("datasets", "data set")):
        if not data.get(name):
            raise ConfigError(f"The '{name}' option must name at least one {what}, e.g. "
                              f"{EXAMPLE}.")
    if "dataset_options" in data:  # they reach a reader's keywords: only those it takes
        opts, keywords = data["dataset_options"], _dataset_option_names()
        if not isinstance(opts, dict) or not all(isinstance(v, (str, type(None)))
                                                 for v in opts.values()) \
                or not set(opts) <= keywords:
            raise ConfigError("The 'dataset_options' option must be an object of strings with "
                              f"keys among {', '.join(sorted(keywords))}, e.g. "
                              f"{{\"text_column\": \"body\"}}. Got {show(opts)} instead.")
    return data


def _jobs(cfg: Any, cwd: Path, allow_plugins: tuple[str, ...], data_dirs: DataDirs
          ) -> list[JobRequest]:
    """One request per (backbone, data set, split) of ``cfg``, keyed by the extraction's
    own recipe (:func:`~featstore.extract.pipeline.request_key_inputs`)."""
    from featstore.extract.pipeline import request_key_inputs

    base = {k: v for k, v in cfg.as_dict().items() if k not in (*SERVER_OWNED, *IGNORED)}
    weights = _file(cfg.weights, "weights", cwd, data_dirs) if cfg.weights else None
    base["weights"] = weights[0] if weights else None
    out = []
    for spec in cfg.backbones:
        backbone = _backbone(spec, allow_plugins, cwd, data_dirs)
        for dataset_spec in cfg.datasets:
            dataset, identity = _dataset(dataset_spec, cwd, data_dirs)
            for split in cfg.splits:
                config = {**base, "backbones": [backbone], "datasets": [dataset],
                          "splits": [split]}
                job = replace(cfg, **config)
                inputs = request_key_inputs(job, backbone=backbone, dataset=identity,
                                            weights=weights[1] if weights else None)
                out.append(JobRequest(config=config, request_key=keys.content_key(inputs),
                                      backbone_group=keys.content_key(inputs["backbone"]),
                                      backbone=backbone, dataset=dataset, split=split))
    return out


def _dataset_option_names() -> set[str]:
    """The keyword options data set readers take (column names, encoding, ...)."""
    from featstore.data import sources

    return {name for reader in (sources.manifest, sources.hf_saved)
            for name, p in inspect.signature(reader).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _check_split(split: str) -> None:
    """A split is a name, never a path: no separators, no '..', printable, short."""
    if (len(split) > MAX_SPLIT or split.strip() in ("", ".", "..") or not split.isprintable()
            or any(c in split for c in "/\\")):
        raise ConfigError(f"The split {show(split)} is not a split name. Expected a short "
                          f"name without '/', '\\' or control characters (at most {MAX_SPLIT} "
                          "characters), e.g. train, test or val.")


def _backbone(spec: str, allow_plugins: tuple[str, ...] = (), cwd: Path | None = None,
              data_dirs: DataDirs = DataDirs()) -> str:
    """The canonical spec, resolved by the backbone registry as extraction resolves it;
    plugins must be allowed (serve --allow-plugin) and importable, and the folder of a
    scheme whose argument is a local folder (``hf:``, ``st:``) must lie in a data folder."""
    from featstore.backbones import backbone_entries, resolve_backbone
    from featstore.errors import UnknownBackboneError

    try:
        resolved = resolve_backbone(spec)
    except UnknownBackboneError as err:
        raise ConfigError(str(err)) from None
    entry = resolved.entry
    if entry is not None and entry.local_folder:
        folder = data_dirs.confine(resolved.argument or "", "backbone", cwd or Path.cwd())
        return f"{entry.name}:{folder}"
    if resolved.plugin:
        scheme = resolved.module or ""
        if scheme not in allow_plugins:
            allowed = ", ".join(allow_plugins) or "none"
            schemes = "/".join(f"{e.name}:" for e in backbone_entries() if e.scheme)
            raise ConfigError(f"Backbone plugin {spec}: plugins run code on the server, and "
                              f"this service allows plugins from: {allowed}. Ask its operator "
                              f"to start it with `--allow-plugin {scheme}`, or use a built-in "
                              f"backbone or {schemes} spec.")
        try:
            found = importlib.util.find_spec(scheme) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"Backbone plugin {spec}: module {scheme!r} cannot be imported on "
                              "the server. Install it there or add its folder to the server's "
                              "PYTHONPATH.")
    return resolved.spec


def _dataset(spec: str, cwd: Path, data_dirs: DataDirs) -> tuple[str, Any]:
    """(what the worker loads, what identifies it in the request key), resolved by the
    data set registry as extraction resolves it."""
    from featstore.data import list_datasets, resolve_dataset

    resolved = resolve_dataset(spec)
    if resolved.entry is not None:
        return resolved.spec, resolved.spec
    return _file(spec, "dataset", cwd, data_dirs, builtins=list_datasets())


def _file(spec: str, option: str, cwd: Path, data_dirs: DataDirs,
          builtins: list[str] | None = None) -> tuple[str, dict[str, Any]]:
    """(real path, identity) of a file or folder in a data folder; confined before it
    is looked at, so a client cannot learn what exists outside the data folders."""
    path = data_dirs.confine(spec, option, cwd, builtins)
    try:
        st = path.stat()
    except OSError:
        also = f"not a built-in ({', '.join(builtins)}) and " if builtins is not None else ""
        raise ConfigError(f"The '{option}' {show(spec)} is {also}not a path on the server (it "
                          "does not exist in the service's data folders). The service reads "
                          "files on its own machine: give a path it can see.") from None
    if option == "weights" and not path.is_file():
        raise ConfigError(f"The 'weights' option must name a file; {show(spec)} is not one.")
    return str(path), {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
