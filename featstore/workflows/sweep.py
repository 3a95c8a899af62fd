"""`featstore sweep`: a grid of tuning runs on cached stores, resumable and parallel.

A run is (train/test/OOD stores, method, hyperparameters, seed). Its id hashes the
store keys and settings; runs whose id is already in the results file are skipped, so
an interrupted sweep continues where it stopped. Runs go to worker processes (or Ray
tasks, :mod:`featstore.workflows.sweep_ray`); only the main process appends to the
results file, one line per finished run, in the grid's order.
"""

from __future__ import annotations

import functools
import itertools
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

from featstore.utils import keys
from featstore.errors import ConfigError
from featstore.store import open_store
from featstore.utils.outputs import check_output_file
from featstore.utils.validation import INF, Interval, OrNone, Text, check
from featstore.tuners.registry import get_tuner, list_tuners
from featstore.workflows.tuning import (SEEDS, check_method_options, check_params, method_params,
                                         seed_list, tune)

KNOWN = {"results", "jobs", "methods", "seeds", "grid", "params", "workers", "root",
         "select_on", "val_fraction", "select_metric", "data_seed"}
#: Keys that turn each (job, method) into one run that selects its grid on validation.
SELECTION_KEYS = ("select_on", "val_fraction", "select_metric", "data_seed")
JOB_KEYS = {"train", "test", "ood", "name"}
SELECT_KEYS = {"backbone", "dataset", "split", "root"}


def resolve_store(ref: Any, root: str | None, where: str) -> str:
    """A store reference in a sweep file: a path or ``ROOT/KEY_PREFIX`` as on the command
    line, or a mapping ``{dataset, split, backbone}`` naming exactly one complete feature
    set in ``root`` (the sweep's, or the mapping's own)."""
    from featstore.store.root import Root

    if isinstance(ref, str):
        return ref
    if not isinstance(ref, dict) or "dataset" not in ref or set(ref) - SELECT_KEYS:
        raise ConfigError(f"{where}: a store is a path, ROOT/KEY_PREFIX, or a mapping with keys "
                          f"dataset, split, backbone (and optional root); got {ref!r}.")
    where_root = ref.get("root") or root
    if not where_root:
        raise ConfigError(f"{where}: {ref!r} selects a store by name but the sweep has no 'root'.")
    found = [e for e in Root(where_root) if e.complete
             and e.summary()["dataset"] == ref["dataset"]
             and (ref.get("split") is None or e.summary()["split"] == ref["split"])
             and (ref.get("backbone") is None or e.summary()["backbone"] == ref["backbone"])]
    if len(found) != 1:
        listing = "; ".join(f"{e.key[:12]} {e.summary()['backbone']} {e.summary()['dataset']}/"
                            f"{e.summary()['split']}" for e in found[:5])
        raise ConfigError(f"{where}: {ref!r} matches {len(found)} complete feature sets in "
                          f"{where_root}{': ' + listing if found else ''}; it must match exactly "
                          f"one (add backbone or split, or give a key). `featstore ls "
                          f"{where_root}` lists them.")
    return str(found[0].path)


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A sweep file, every value checked before any store is read or any run starts."""
    from featstore.utils.yaml_files import read_mapping

    cfg = read_mapping(path, "sweep file", "'methods: [lp, nmtune]'")
    unknown = sorted(set(cfg) - KNOWN)
    if unknown:
        raise ConfigError(f"Unknown keys {unknown} in sweep file {path}. Known keys: {sorted(KNOWN)}.")
    for need in ("results", "jobs", "methods"):
        if need not in cfg:
            raise ConfigError(f"Sweep file {path} needs '{need}'.")
    owner = f"the sweep file {path}"
    check("results", cfg["results"], Text(), owner=owner)  # a file; JSON lines are appended
    check_output_file(cfg["results"], f"'results' in {path}:")
    _check_jobs(cfg["jobs"], path)
    if isinstance(cfg["methods"], str):
        cfg["methods"] = [cfg["methods"]]
    methods = cfg["methods"]
    if not isinstance(methods, list) or not methods:
        raise ConfigError(f"'methods' in {path} must be a non-empty list, e.g. [lp, nmtune]; "
                          f"got {methods!r}.")
    for m in methods:
        if m not in list_tuners():
            raise ConfigError(f"Unknown method {m!r} in {path}; expected one of "
                              f"{', '.join(list_tuners())}.")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"'methods' in {path} lists a method twice: {methods}.")
    check("seeds", cfg.get("seeds", 3), SEEDS, owner=owner)
    check("workers", cfg.get("workers"), OrNone(Interval(int, 1, INF, "left")), owner=owner)
    check("root", cfg.get("root"), OrNone(Text()), owner=owner)  # a folder or URL
    _check_params(cfg, path)
    _check_selection(cfg, path)
    return cfg


def _check_selection(cfg: dict[str, Any], path: str | Path) -> None:
    """``select_on`` (and its options) as `tune` checks them."""
    from featstore.workflows.selection import check_selection

    sel = _selection(cfg)
    if not sel["select_on"] and any(k in cfg for k in SELECTION_KEYS):
        raise ConfigError(f"{path}: {[k for k in SELECTION_KEYS if k in cfg]} need(s) "
                          "'select_on: val'.")
    try:
        check_selection(None, sel["select_on"], None, sel["val_fraction"], sel["select_metric"],
                        sel["data_seed"])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _selection(cfg: dict[str, Any]) -> dict[str, Any]:
    return {"select_on": cfg.get("select_on"), "val_fraction": cfg.get("val_fraction", 0.2),
            "select_metric": cfg.get("select_metric", "accuracy"),
            "data_seed": cfg.get("data_seed")}


def _check_jobs(jobs: Any, path: str | Path) -> None:
    if not isinstance(jobs, list) or not jobs:
        raise ConfigError(f"'jobs' in {path} must be a non-empty list of jobs, each with train "
                          f"and test stores (and optional ood, name); got {jobs!r}.")
    for job in jobs:
        keys_ = sorted(map(str, job)) if isinstance(job, dict) else repr(job)
        if not isinstance(job, dict) or set(job) - JOB_KEYS or "train" not in job or "test" not in job:
            raise ConfigError(f"Each job in {path} needs train and test (and optional ood, name); "
                              f"got {keys_}.")
        if not isinstance(job.get("ood", []), list):
            raise ConfigError(f"'ood' of a job in {path} must be a list of stores; got "
                              f"{job['ood']!r}.")


def _grid(cfg: dict[str, Any], method: str) -> dict[str, list[Any]]:
    """The grid of ``method``: each parameter's values as a list."""
    grid = (cfg.get("grid") or {}).get(method) or {}
    return {n: v if isinstance(v, list) else [v]
            for n, v in sorted(grid.items(), key=lambda kv: str(kv[0]))}


def _common(cfg: dict[str, Any], method: str) -> dict[str, Any]:
    """The shared ``params`` that ``method`` takes (the others are for other methods)."""
    names = method_params(method)
    return {k: v for k, v in (cfg.get("params") or {}).items() if k in names}


def _harmless(method: str, name: str, value: Any) -> bool:
    """``name: value`` is an option ``method`` does not use, at a harmless value."""
    harmless = get_tuner(method).not_used.get(name, ((), ""))[0]
    return isinstance(value, str) and value.strip().lower() in harmless


def _check_params(cfg: dict[str, Any], path: str | Path) -> None:
    """``params`` and ``grid``: shapes, names that apply, and every grid point's values."""
    methods, params, grid = cfg["methods"], cfg.get("params") or {}, cfg.get("grid") or {}
    if not isinstance(params, dict):
        raise ConfigError(f"'params' in {path} must be a mapping, e.g. {{epochs: 30}}; got {params!r}.")
    taken = set().union(*(method_params(m) for m in methods))
    unused = sorted(str(k) for k, v in params.items()
                    if k not in taken and not all(_harmless(m, k, v) for m in methods))
    if unused:
        raise ConfigError(f"'params' in {path} has {unused}, which none of the methods "
                          f"{methods} takes; their parameters are {', '.join(sorted(taken))}.")
    if not isinstance(grid, dict):
        raise ConfigError(f"'grid' in {path} must map a method to its parameters' values, e.g. "
                          f"{{nmtune: {{lambda_svd: [0.0, 0.01]}}}}; got {grid!r}.")
    for method, values in grid.items():
        if method not in methods:
            raise ConfigError(f"'grid' in {path} has {method!r}, which is not in methods "
                              f"{methods}; add it there or remove its grid.")
        if not isinstance(values, dict):
            raise ConfigError(f"'grid: {method}' in {path} must map parameters to lists of "
                              f"values, e.g. {{lr: [0.001, 0.01]}}; got {values!r}.")
        empty = sorted(str(n) for n, v in values.items() if v == [])
        if empty:
            raise ConfigError(f"'grid: {method}' in {path} gives no values for {empty}: the "
                              "grid would have no runs.")
    for method in methods:
        grid_m = _grid(cfg, method)
        for point in itertools.product(*grid_m.values()):
            given = {**_common(cfg, method), **dict(zip(grid_m, point))}
            try:
                check_params(method, check_method_options(method, given))
            except ConfigError as err:
                raise ConfigError(f"{path}, method {method}: {err}") from None


def expand(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the grid, each with its id."""
    seeds = seed_list(cfg.get("seeds", 3))
    runs = []
    for i, job in enumerate(cfg["jobs"]):
        where = f"sweep job {i + 1}" + (f" ({job['name']})" if job.get("name") else "")
        job = {**job, **{k: resolve_store(job[k], cfg.get("root"), where) for k in ("train", "test")},
               "ood": [resolve_store(o, cfg.get("root"), where) for o in job.get("ood", [])]}
        stores = [job["train"], job["test"], *job["ood"]]
        store_keys = []
        for s in stores:
            with open_store(s) as fs:
                store_keys.append(fs.key)
        for method in cfg["methods"]:
            grid = _grid(cfg, method)
            if cfg.get("select_on"):  # one run trains the grid for every seed and chooses
                params = check_method_options(method, _common(cfg, method))
                sel = _selection(cfg)
                ident = keys.content_key({"stores": store_keys, "method": method,
                                          "params": params, "grid": grid, "seeds": seeds, **sel})
                runs.append({"id": ident, "train": job["train"], "test": job["test"],
                             "ood": list(job.get("ood", [])), "method": method, "params": params,
                             "seeds": seeds, "grid": grid, "selection": sel})
                continue
            for values in itertools.product(*grid.values()):
                # shared params the method takes, then its grid point (harmless options
                # of a method that does not use them dropped, as `tune` does)
                params = check_method_options(method, {**_common(cfg, method),
                                                       **dict(zip(grid, values))})
                for seed in seeds:
                    ident = keys.content_key({"stores": store_keys, "method": method,
                                              "params": params, "seed": seed})
                    runs.append({"id": ident, "train": job["train"], "test": job["test"],
                                 "ood": list(job.get("ood", [])), "method": method,
                                 "params": params, "seed": seed})
    return runs


def done_ids(results: Path) -> set[str]:
    if not results.exists():
        return set()
    out = set()
    for line in results.read_text().splitlines():
        if line.strip():
            try:
                out.add(json.loads(line).get("run_id"))
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that run is simply redone
    return out


#: Threads (torch and BLAS) of one run: float results depend on the thread count, so a
#: run gives the same numbers in a local worker process and in a Ray task.
RUN_THREADS = 1


def _run_one(run: dict[str, Any]) -> dict[str, Any]:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(RUN_THREADS)  # one core per worker process
    with threadpool_limits(RUN_THREADS):
        if "selection" in run:
            rec = tune(run["train"], run["test"], run["ood"], run["method"], seeds=run["seeds"],
                       params=dict(run["params"]), grid=run["grid"] or None, **run["selection"])
        else:
            rec = tune(run["train"], run["test"], run["ood"], run["method"], seeds=[run["seed"]],
                       params=dict(run["params"]))
    rec["run_id"] = run["id"]
    rec["threads"] = RUN_THREADS
    return rec


def run_in_processes(todo: list[dict[str, Any]], fn: Callable[[dict[str, Any]], dict[str, Any]],
                     workers: int) -> Iterator[dict[str, Any]]:
    """``fn(run)`` for each run of ``todo`` in ``workers`` processes, yielded in
    ``todo``'s order (so the results file's rows are in the grid's order)."""
    # spawn, not fork: the parent runs zarr's I/O thread, and fork copies no threads
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(fn, r) for r in todo]
        i = 0
        try:
            for i, fut in enumerate(futures):
                yield fut.result()
        except Exception:
            # A failed run stops the sweep: runs not started are cancelled rather than
            # computed and dropped; later runs that had finished are still kept.
            for fut in futures:
                fut.cancel()
            yield from (f.result() for f in futures[i + 1:]
                        if f.done() and not f.cancelled() and f.exception() is None)
            raise
        finally:
            for fut in futures:  # ^C, or the caller stopped reading
                fut.cancel()


def forward_passes_avoided(rec: dict[str, Any]) -> int:
    """Backbone passes a pipeline without the cache would need for this run: one per
    training sample per epoch and head, plus one per evaluated sample (and, for a run that
    selects on a carved validation split, one per validation sample and head)."""
    epochs = rec["runs"][0]["params"].get("epochs", 1)
    sel = rec.get("selection")
    heads = len(sel["points"]) * len(rec["runs"]) if sel else len(rec["runs"])
    n_val = sel["val"]["n"] if sel else 0
    return int(heads * (epochs * rec["n_train"] + n_val)
               + len(rec["runs"]) * sum(rec["n_eval"].values()))


def sweep(cfg: dict[str, Any], *, on_done: Callable[[dict[str, Any], int, int], None] | None = None,
          executor: Any = None) -> dict[str, Any]:
    """Run the runs of ``cfg`` not yet in its results file, appending one line per run in
    the grid's order. ``executor(todo, fn)`` yields ``fn(run)`` for each run of ``todo`` in
    order (default: :func:`run_in_processes`; ``featstore.workflows.sweep_ray.RayRuns``
    runs them as Ray tasks); its ``workers`` attribute, if any, is reported."""
    results = Path(cfg["results"])
    runs = expand(cfg)
    done = done_ids(results)
    todo = [r for r in runs if r["id"] not in done]
    workers = int(getattr(executor, "workers", None) or cfg.get("workers")
                  or min(len(todo), os.cpu_count() or 1) or 1)
    if executor is None:
        executor = functools.partial(run_in_processes, workers=workers)
    results.parent.mkdir(parents=True, exist_ok=True)
    avoided, finished = 0, 0
    if todo:
        with open(results, "a") as out:
            if out.tell() and not results.read_bytes().endswith(b"\n"):
                out.write("\n")  # after a line cut by a kill, start a new one
            for rec in executor(todo, _run_one):
                out.write(json.dumps(rec, default=str) + "\n")
                out.flush()
                finished += 1
                avoided += forward_passes_avoided(rec)
                if on_done:
                    on_done(rec, finished, len(todo))
    return {"runs": len(runs), "skipped": len(runs) - len(todo), "ran": finished,
            "workers": workers, "forward_passes_avoided": avoided, "results": str(results)}
