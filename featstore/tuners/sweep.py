"""`featstore sweep`: a grid of tuning runs on cached stores, resumable and parallel.

A run is (train/test/OOD stores, method, hyperparameters, seed). Its id hashes the
store keys and settings; runs whose id is already in the results file are skipped, so
an interrupted sweep continues where it stopped. Runs go to worker processes; only
the main process appends to the results file, one line per finished run.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from .. import keys
from ..errors import ConfigError
from ..store import open_store
from .run import METHODS, tune

KNOWN = {"results", "jobs", "methods", "seeds", "grid", "params", "workers", "root"}
JOB_KEYS = {"train", "test", "ood", "name"}
SELECT_KEYS = {"backbone", "dataset", "split", "root"}


def resolve_store(ref: Any, root: str | None, where: str) -> str:
    """A store reference in a sweep file: a path or ``ROOT/KEY_PREFIX`` as on the command
    line, or a mapping ``{dataset, split, backbone}`` naming exactly one complete feature
    set in ``root`` (the sweep's, or the mapping's own)."""
    from ..store.root import Root

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
    from ..yaml_files import read_mapping

    cfg = read_mapping(path, "sweep file", "'methods: [lp, nmtune]'")
    unknown = sorted(set(cfg) - KNOWN)
    if unknown:
        raise ConfigError(f"Unknown keys {unknown} in sweep file {path}. Known keys: {sorted(KNOWN)}.")
    for need in ("results", "jobs", "methods"):
        if need not in cfg:
            raise ConfigError(f"Sweep file {path} needs '{need}'.")
    for job in cfg["jobs"]:
        bad = sorted(set(job) - JOB_KEYS)
        if bad or "train" not in job or "test" not in job:
            raise ConfigError(f"Each job in {path} needs train and test (and optional ood, name); "
                              f"got keys {sorted(job)}.")
    for m in cfg["methods"]:
        if m not in METHODS:
            raise ConfigError(f"Unknown method {m!r} in {path}; expected one of {', '.join(METHODS)}.")
    return cfg


def expand(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of the grid, each with its id."""
    seeds = cfg.get("seeds", [0, 1, 2])
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    common = cfg.get("params") or {}
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
            grid = (cfg.get("grid") or {}).get(method) or {}
            names = sorted(grid)
            for values in itertools.product(*[grid[n] if isinstance(grid[n], list) else [grid[n]] for n in names]):
                params = {**common, **dict(zip(names, values))}
                if method == "logreg":
                    params = {k: v for k, v in params.items()
                              if k in ("Cs", "val_fraction", "max_iter", "train_noise", "noise_kind")}
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


def _run_one(run: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)  # one core per worker process
    rec = tune(run["train"], run["test"], run["ood"], run["method"], seeds=[run["seed"]],
               params=dict(run["params"]))
    rec["run_id"] = run["id"]
    return rec


def forward_passes_avoided(rec: dict[str, Any]) -> int:
    """Backbone passes a pipeline without the cache would need for this run: one per
    training sample per epoch, plus one per evaluated sample."""
    epochs = rec["runs"][0]["params"].get("epochs", 1)
    return int(epochs * rec["n_train"] + sum(rec["n_eval"].values()))


def sweep(cfg: dict[str, Any], *, on_done: Callable[[dict[str, Any], int, int], None] | None = None
          ) -> dict[str, Any]:
    results = Path(cfg["results"])
    runs = expand(cfg)
    done = done_ids(results)
    todo = [r for r in runs if r["id"] not in done]
    workers = int(cfg.get("workers") or min(len(todo), os.cpu_count() or 1) or 1)
    results.parent.mkdir(parents=True, exist_ok=True)
    avoided, finished = 0, 0
    if todo:
        # spawn, not fork: the parent runs zarr's I/O thread, and fork copies no threads
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool, \
                open(results, "a") as out:
            futures = [pool.submit(_run_one, r) for r in todo]
            for fut in as_completed(futures):
                rec = fut.result()
                out.write(json.dumps(rec, default=str) + "\n")
                out.flush()
                finished += 1
                avoided += forward_passes_avoided(rec)
                if on_done:
                    on_done(rec, finished, len(todo))
    return {"runs": len(runs), "skipped": len(runs) - len(todo), "ran": finished,
            "workers": workers, "forward_passes_avoided": avoided, "results": str(results)}
