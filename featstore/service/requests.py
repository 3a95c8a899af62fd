"""Job requests: validate a submitted body and split it into one job per
(backbone, data set, split), each with a *request key*.

A request key is a hash of the options that determine a feature set's values, with
local files named by absolute path, size and modification time. It is known without
loading a backbone or reading a data set, so the server can answer at once: a finished
job with the same request key is a cache hit, a queued or running one is joined.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from .. import keys
from ..errors import ConfigError

#: Options of `featstore extract` that the service decides, and why (the 400 says so).
SERVER_OWNED = {
    "root": "the service extracts into its own root (featstore serve --root)",
    "device": "each worker runs on its own device (featstore serve --devices)",
    "lease_seconds": "the service sets the writers' lease (featstore serve --lease-seconds)",
    "force": ("the service never deletes feature sets; remove one on the server with "
              "`featstore rm` and submit again"),
}
#: Accepted and ignored (a worker has no terminal).
IGNORED = ("progress",)
ALIASES = {"backbone": "backbones", "dataset": "datasets", "split": "splits"}
EXAMPLE = '{"backbones": ["efficientnet-lite0"], "datasets": ["mnist-5k"], "splits": ["train"]}'
#: Version of the request-key recipe; bump it when the recipe changes.
REQUEST_KEY_VERSION = 1


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
    from ..extract.config import ExtractConfig

    return sorted(f.name for f in fields(ExtractConfig) if f.name not in SERVER_OWNED)


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request body, or :class:`ConfigError` saying what was expected."""
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"The request body is not valid JSON ({err}). Expected a JSON object "
                          f"of extract options, e.g. {EXAMPLE}.") from err
    if not isinstance(data, dict):
        raise ConfigError(f"The request body is JSON but a {type(data).__name__}, not an object. "
                          f"Expected a JSON object of extract options, e.g. {EXAMPLE}.")
    return data


def expand(options: dict[str, Any], root: str, *, cwd: Path | None = None,
           allow_plugins: tuple[str, ...] = (), max_jobs: int = 100) -> list[JobRequest]:
    """Validate ``options`` (as for `featstore extract`) and return one request per job.

    Relative paths are read from ``cwd`` (the server's working folder). Repeated
    backbones, data sets or splits count once; a request that would make more than
    ``max_jobs`` jobs is refused before any work. ``module:function`` plugins are
    accepted only from the modules in ``allow_plugins`` (they run code on the server).
    Raises :class:`ConfigError` with what was expected.
    """
    from ..extract.config import ExtractConfig

    cwd = cwd or Path.cwd()
    data = {ALIASES.get(str(k), str(k)).replace("-", "_"): v for k, v in options.items()}
    owned = sorted(set(data) & set(SERVER_OWNED))
    if owned:
        raise ConfigError(f"The option {owned[0]!r} cannot be set in a job: "
                          f"{SERVER_OWNED[owned[0]]}. Leave it out.")
    known = set(accepted_options())
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"Unknown option(s) {unknown} in the job request. Expected options: "
                          f"{', '.join(sorted(known - set(IGNORED)))}.")
    for name in IGNORED:
        data.pop(name, None)
    for name, what in (("backbones", "backbone"), ("datasets", "data set")):
        if not data.get(name):
            raise ConfigError(f"The '{name}' option must name at least one {what}, e.g. "
                              f"{EXAMPLE}.")
    _check_types(data)
    try:
        cfg = ExtractConfig.from_dict({**data, "root": root, "progress": False})
    except TypeError as err:  # a value of a type the dataclass cannot take
        raise ConfigError(f"Invalid job options: {err}. Expected e.g. {EXAMPLE}.") from err
    if not cfg.splits:
        raise ConfigError("The 'splits' option must name at least one split, e.g. [\"train\"].")
    for name in ("backbones", "datasets", "splits"):
        setattr(cfg, name, list(dict.fromkeys(getattr(cfg, name))))  # repeats count once
    n_jobs = len(cfg.backbones) * len(cfg.datasets) * len(cfg.splits)
    if n_jobs > max_jobs:
        raise ConfigError(f"This request would make {n_jobs} jobs (backbones x data sets x "
                          f"splits); this service takes at most {max_jobs} per request "
                          "(serve --max-jobs-per-request). Send several smaller requests.")
    base = cfg.as_dict()
    for name in (*SERVER_OWNED, *IGNORED):
        base.pop(name, None)
    weights = _file(cfg.weights, "weights", cwd) if cfg.weights else None
    base["weights"] = weights[0] if weights else None
    out = []
    for spec in cfg.backbones:
        backbone = _backbone(spec, allow_plugins)
        group = {"backbone": backbone, "weights": weights[1] if weights else None,
                 "pretrained": cfg.pretrained, "image_size": cfg.image_size,
                 "pooling": cfg.pooling}
        for dataset_spec in cfg.datasets:
            dataset, identity = _dataset(dataset_spec, cwd)
            for split in cfg.splits:
                config = {**base, "backbones": [backbone], "datasets": [dataset],
                          "splits": [split]}
                values = {
                    "v": REQUEST_KEY_VERSION, **group, "dataset": identity,
                    "dataset_options": cfg.dataset_options, "split": split,
                    "limit": cfg.limit, "dtype": cfg.dtype, "views": cfg.views,
                    "augment": cfg.augment, "format": cfg.format,
                    # the seed only matters to augmentation and --limit subsets
                    "seed": cfg.seed if (cfg.limit is not None or cfg.augment != "none") else None,
                }
                out.append(JobRequest(config=config, request_key=keys.content_key(values),
                                      backbone_group=keys.content_key(group), backbone=backbone,
                                      dataset=dataset, split=split))
    return out


def _check_types(data: dict[str, Any]) -> None:
    """Types ExtractConfig leaves unchecked, as a 400 instead of a worker's traceback."""
    def bad(name: str, expected: str) -> ConfigError:
        return ConfigError(f"The '{name}' option must be {expected}. Got {data[name]!r} instead.")

    for name in ("backbones", "datasets", "splits"):
        if name in data:
            value = [data[name]] if isinstance(data[name], str) else data[name]
            if not isinstance(value, list) or not all(isinstance(v, str) and v.strip()
                                                      for v in value):
                raise bad(name, "a non-empty string or a list of them")
    for name in ("image_size", "limit", "num_workers"):
        if data.get(name) is not None and (not isinstance(data[name], int)
                                           or isinstance(data[name], bool)):
            raise bad(name, "an integer or null")
    if "seed" in data and (not isinstance(data["seed"], int) or isinstance(data["seed"], bool)):
        raise bad("seed", "an integer")
    for name in ("weights", "pooling"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise bad(name, "a string or null")
    for name in ("pretrained", "strict"):
        if name in data and not isinstance(data[name], bool):
            raise bad(name, "true or false")
    for name in ("format", "dtype", "codec", "augment"):
        if name in data and not isinstance(data[name], str):
            raise bad(name, "a string")
    if "dataset_options" in data:
        opts = data["dataset_options"]
        if not isinstance(opts, dict) or not all(isinstance(v, (str, type(None)))
                                                 for v in opts.values()):
            raise bad("dataset_options", "an object of column names, e.g. {\"text_column\": "
                                         "\"body\"}")


def _backbone(spec: str, allow_plugins: tuple[str, ...] = ()) -> str:
    """The canonical spec; plugins must be allowed (serve --allow-plugin) and importable."""
    from ..backbones import SCHEMES
    from ..backbones.builtin import BUILTINS

    spec = spec.strip()
    lowered = spec.lower().replace("_", "-")
    if lowered in BUILTINS:
        return lowered
    scheme, sep, rest = spec.partition(":")
    if not sep or not rest:
        raise ConfigError(f"Unknown backbone {spec!r}. Expected a built-in name "
                          f"({', '.join(BUILTINS)}) or a spec timm:NAME, hf:PATH, st:PATH, "
                          "openai:MODEL or module:function.")
    if scheme not in SCHEMES:
        if scheme not in allow_plugins:
            allowed = ", ".join(allow_plugins) or "none"
            raise ConfigError(f"Backbone plugin {spec}: plugins run code on the server, and "
                              f"this service allows plugins from: {allowed}. Ask its operator "
                              f"to start it with `--allow-plugin {scheme}`, or use a built-in "
                              "backbone or timm:/hf:/st:/openai: spec.")
        try:
            found = importlib.util.find_spec(scheme) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            raise ConfigError(f"Backbone plugin {spec}: module {scheme!r} cannot be imported on "
                              "the server. Install it there or add its folder to the server's "
                              "PYTHONPATH.")
    return spec


def _dataset(spec: str, cwd: Path) -> tuple[str, Any]:
    """(what the worker loads, what identifies it in the request key)."""
    from ..data.builtin import BUILTINS

    name = spec.strip().lower().replace("_", "-")
    if name in BUILTINS:
        return name, name
    return _file(spec, "dataset", cwd, builtins=list(BUILTINS))


def _file(spec: str, option: str, cwd: Path, builtins: list[str] | None = None
          ) -> tuple[str, dict[str, Any]]:
    path = Path(spec).expanduser()
    path = (path if path.is_absolute() else cwd / path).resolve()
    try:
        st = path.stat()
    except OSError:
        also = f"not a built-in ({', '.join(builtins)}) and " if builtins is not None else ""
        raise ConfigError(f"The '{option}' {spec!r} is {also}not a path on the server ({path} "
                          "does not exist there). The service reads files on its own machine: "
                          "give a path it can see.") from None
    if option == "weights" and not path.is_file():
        raise ConfigError(f"The 'weights' option must name a file; {path} is not one.")
    return str(path), {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
