"""`featstore tune`: train a tuner on one store over seeds; evaluate ID and OOD stores."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from featstore.utils import keys
from featstore.errors import ConfigError, DataError, NotFoundError
from featstore.analysis.spectrum import spectrum_of_blocks
from featstore.utils.outputs import check_output_dir, check_output_file
from featstore.utils.validation import INF, AnyOf, Interval, ListOf, Options, check
from featstore.store import open_store
from featstore.tuners.metrics import classification_metrics, regression_metrics
from featstore.tuners.registry import create_tuner, get_tuner, tuner_entries
from featstore.workflows import selection

#: Parameters of ``tune`` itself (label noise), taken by every method.
TUNE_PARAMS = {"train_noise", "noise_kind"}


def method_params(method: str) -> set[str]:
    """The parameter names ``method`` takes (``random_state`` is the seed, set by tune)."""
    return get_tuner(method).param_names() | TUNE_PARAMS


def check_method_options(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` for ``method``: harmless values of options it does not use are dropped
    (see the registry entry's ``not_used``); other values of them, and unknown names, are
    refused."""
    rules, out = get_tuner(method).not_used, {}
    for name, value in params.items():
        if name not in rules:
            out[name] = value
            continue
        harmless, why = rules[name]
        if not (isinstance(value, str) and value.strip().lower() in harmless):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value} does not apply to --method {method}: {why}.")
    unknown = sorted(map(str, set(out) - method_params(method)))
    if unknown:
        raise ConfigError(f"--method {method} has no parameter(s) {unknown}; its parameters are "
                          f"{', '.join(sorted(method_params(method)))}.")
    return out


def check_params(method: str, params: dict[str, Any]) -> None:
    """Refuse bad hyperparameter values before any store is read, by the tuner's rules."""
    tuner_params = {k: v for k, v in params.items() if k not in TUNE_PARAMS}
    create_tuner(method, dim=1, random_state=0, **tuner_params)._validate_params()


#: ``seeds``: how many (0, 1, ... n-1), or which.
SEEDS = AnyOf(Interval(int, 1, INF, "left"), ListOf(Interval(int, 0, INF, "left")))


def seed_list(seeds: Any) -> list[int]:
    """``seeds``: a count (>= 1) or a non-empty list of seeds (ints >= 0)."""
    check("seeds", seeds, SEEDS, owner="tune")
    return list(range(seeds)) if isinstance(seeds, int) else list(seeds)


def _finite_labels(fs: Any, y: np.ndarray, valid: np.ndarray, path: str) -> None:
    """A store written before targets were checked may hold NaN/inf: refuse it by name."""
    if y.dtype.kind != "f":
        return
    bad = np.flatnonzero(~np.isfinite(y))
    if len(bad):
        sid = str(fs.sample_ids[valid][bad[0]])
        raise DataError(f"{path}: the regression target of sample id {sid!r} is not finite "
                        f"({y[bad[0]]}; {len(bad)} sample(s) in all), so training would report NaN. "
                        "Fix the labels and extract again (featstore now refuses such data).")


def _load(path: str, stream: str = "auto") -> dict[str, Any]:
    """A labelled store's metadata and labels; its features too, unless they are to be
    streamed (then ``X`` is None and the tuner reads the store chunk by chunk)."""
    from featstore.tuners.batches import should_stream

    with open_store(path) as fs:
        if fs.labels is None:
            raise DataError(f"{path} has no labels: tuning needs a labelled split.")
        valid = fs.valid
        if not valid.any():
            raise DataError(f"{path} has no valid samples (n={fs.n_samples}); extract a "
                            "non-empty split.")
        _finite_labels(fs, fs.labels[valid], valid, path)
        streamed = should_stream(fs, stream)
        X = None if streamed else fs.load_features(dtype=np.float32)[valid]
        meta = fs.metadata
        return {"path": str(fs.path), "key": fs.key, "X": X, "y": fs.labels[valid],
                "classes": fs.classes, "task": fs.task, "streamed": streamed, "dim": fs.n_features,
                "backbone": keys.backbone_key(meta), "backbone_id": meta["backbone"].get("id"),
                "name": f"{meta['dataset']['name']}/{meta['dataset']['split']}",
                "pretraining_noise": (meta["backbone"].get("model_card") or {}).get("noise")}


def _with_features(s: dict[str, Any], fn: Any) -> Any:
    """``fn(features)``: the array in memory, or the open store when streamed."""
    if s["X"] is not None:
        return fn(s["X"])
    with open_store(s["path"]) as fs:
        return fn(fs)


def _z_spectrum(est: Any, s: dict[str, Any]) -> Any:
    """SVE/LSVR of the tuned features z on a store (LP: the raw ones), row-L2."""
    from featstore.tuners.batches import iter_store_rows

    def blocks(src: Any) -> Any:
        rows = iter_store_rows(src) if s["X"] is None else [src]
        for x in rows:
            z = est.transform(x)
            yield z[:, 0] if z.ndim == 3 else z

    return _with_features(s, lambda src: spectrum_of_blocks(blocks(src), "l2"))


def tune(train: str, test: str, ood: list[str], method: str, *, seeds: int | list[int] = 3,
         params: dict[str, Any] | None = None, results: str | None = None,
         save_heads: str | None = None, grid: dict[str, list[Any]] | None = None,
         select_on: str | None = None, val: str | None = None, val_fraction: float = 0.2,
         select_metric: str = "accuracy", data_seed: int | None = None) -> dict[str, Any]:
    """Fit ``method`` on ``train`` for each seed; evaluate on ``test`` and each OOD store.

    ``save_heads``: a folder to write each seed's head to (``METHOD-seedK.safetensors``
    and ``.json``), for ``featstore eval``/``predict`` and spectra of tuned features.

    ``grid`` (name -> values) with ``select_on="val"``: every grid point is trained for
    every seed (heads sharing a pass train together, :func:`featstore.tuners.grid.fit_grid`)
    on the training store less a stratified validation split (``val_fraction``, seeded),
    or on all of it when ``val`` names a validation store; the point with the best mean
    ``select_metric`` on validation is chosen, and only its heads are evaluated on the
    test and OOD stores. ``data_seed``: one data order for every seed (seeds then change
    only the initialisation, and everything trains in one pass).
    """
    params = dict(params or {})
    train_noise, noise_kind = _noise_options(params)
    if save_heads and not get_tuner(method).saves_heads:
        raise ConfigError(f"--save-heads applies to the heads of "
                          f"{', '.join(e.name for e in tuner_entries() if e.saves_heads)}; "
                          f"{method} does not save one. Leave --save-heads out for it.")
    # Everything a user gave is checked before any store is read or any seed trained.
    selection.check_selection(grid, select_on, val, val_fraction, select_metric, data_seed)
    raw_points = _check_grid(method, grid)  # the grid's own values, for the record
    points = [check_method_options(method, {**params, **p}) for p in raw_points]
    for point in points:
        check_params(method, point)
    params = check_method_options(method, params)
    seeds_run = seed_list(seeds)
    if results:
        check_output_file(results, "--results")
    if save_heads:
        check_output_dir(save_heads, "--save-heads")
    stream = params.get("stream", "auto")
    tr = _load(train, stream)
    evals = [("id", _load(test, stream))] + [("ood", _load(p, stream)) for p in ood]
    val_store = _load(val, stream) if val else None
    for s in [e[1] for e in evals] + ([val_store] if val_store else []):
        _check_compatible(tr, s)
    _check_val_is_separate(val, val_store, tr, evals)
    if select_on and tr["task"] == "regression" and select_metric not in selection.REGRESSION_METRICS:
        raise ConfigError(f"--select-metric {select_metric} is for classes; the training store "
                          f"holds regression targets: use one of "
                          f"{', '.join(selection.REGRESSION_METRICS)}.")
    if train_noise and tr["task"] == "regression":
        raise DataError("--train-noise flips class labels; this training store has "
                        "regression targets.")

    def labels_of(seed: int) -> tuple[np.ndarray, int]:
        if not train_noise:
            return tr["y"], 0
        from featstore.data.noise import add_label_noise

        y_noisy, flipped = add_label_noise(tr["y"], train_noise, noise_kind, seed=seed)
        return y_noisy, int(flipped.sum())

    chosen, sel = None, None
    if select_on:
        chosen, sel, n_fit = _select(tr, val_store, method, (points, raw_points), seeds_run,
                                     labels_of, val_fraction, select_metric, data_seed)
    runs = []
    for seed in seeds_run:
        t0 = time.perf_counter()
        y_fit, n_noisy = labels_of(seed)
        if chosen is not None:
            est, fit_s = chosen[seed]
        else:
            est = _with_features(tr, lambda X: create_tuner(
                method, dim=tr["dim"], random_state=seed, task=tr["task"], **params).fit(X, y_fit))
            fit_s = time.perf_counter() - t0
        est.backbone_key_ = tr["backbone"]  # fitted on arrays: remember which backbone
        if save_heads:
            est.save(Path(save_heads) / f"{method}-seed{seed}")
        run = {"seed": seed, "fit_seconds": round(fit_s, 3), "scores": _scores(est, tr, evals),
               "train_labels_noisy": n_noisy, "streamed": bool(getattr(est, "streamed_", False)),
               "params": {k: _plain(v) for k, v in est.get_params().items() if k != "random_state"}}
        if sel is not None:
            run["val"] = sel["points"][sel["chosen_index"]]["val"]["per_seed"][str(seed)]
        runs.append(run)
    summary = _summarize(runs)
    record = {"method": method, "train": {"name": tr["name"], "key": tr["key"]},
              "params": points[sel["chosen_index"]] if sel else params, "seeds": seeds_run,
              "noise": {"train_noise": train_noise, "kind": noise_kind if train_noise else None,
                        "pretraining": tr["pretraining_noise"]}, "runs": runs, "summary": summary,
              "n_train": int(n_fit if sel else len(tr["y"])),
              "n_eval": {s["name"]: int(len(s["y"])) for _, s in evals},
              "versions": keys.library_versions(), "created_at": keys.now_iso()}
    if sel is not None:
        record["grid"] = grid or {}
        record["selection"] = sel
    if results:
        path = Path(results)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:  # one JSON line per tune call, written after it succeeded
            f.write(json.dumps(record, default=str) + "\n")
    return record


def _noise_options(params: dict[str, Any]) -> tuple[float, str]:
    """Downstream label noise (paper B.5), taken out of ``params`` and checked: it
    applies to the training labels only, seeded per run."""
    train_noise = float(params.pop("train_noise", 0) or 0)
    noise_kind = params.pop("noise_kind", "symmetric")
    if train_noise:
        from featstore.data.noise import KINDS, RATIO

        check("train_noise", train_noise, RATIO, owner="tune")
        check("noise_kind", noise_kind, Options(*KINDS), owner="tune")
    return train_noise, noise_kind


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _check_grid(method: str, grid: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """The grid's points; a name ``method`` does not take, or tune's own, is refused."""
    if grid:
        own = sorted(set(grid) & (TUNE_PARAMS | {"random_state"}))
        if own:
            raise ConfigError(f"--grid cannot vary {own}: seeds are --seeds, label noise is one "
                              "setting per call. Grid over the method's hyperparameters.")
        unknown = sorted(set(grid) - method_params(method))
        if unknown:
            raise ConfigError(f"--grid {unknown[0]}=...: --method {method} has no parameter "
                              f"{unknown[0]!r}; its parameters are "
                              f"{', '.join(sorted(method_params(method) - TUNE_PARAMS))}.")
    return selection.grid_points(grid)


def _check_compatible(tr: dict[str, Any], s: dict[str, Any]) -> None:
    """``s`` (an evaluation or validation store) has ``tr``'s backbone and label set."""
    if s["dim"] != tr["dim"]:
        raise DataError(f"{s['path']} has {s['dim']} features per sample but the training "
                        f"store {tr['path']} has {tr['dim']}: they come from different "
                        "backbones or layers. Tune and evaluate on features of one backbone.")
    if s["backbone"] != tr["backbone"]:
        raise DataError(f"{s['path']} was extracted with another backbone than {tr['path']} "
                        f"({s['backbone_id']} vs {tr['backbone_id']}: weights, layer, pooling "
                        "or preprocessing differ). Tune and evaluate on features of one backbone.")
    unseen = (set(np.unique(s["y"]).tolist()) - set(np.unique(tr["y"]).tolist())
              if tr["task"] != "regression" else set())
    if unseen:
        raise DataError(f"{s['path']} has labels {sorted(unseen)[:5]} that the training store "
                        f"{tr['path']} never has; evaluation needs the same label set.")
    if tr["classes"] and s["classes"] and list(s["classes"]) != list(tr["classes"]):
        raise DataError(f"{s['path']} has classes {s['classes'][:5]}... but the training "
                        f"store has {tr['classes'][:5]}...; OOD evaluation needs the same "
                        "label set.")


def _metrics(task: str | None, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return (classification_metrics(y, pred) if task != "regression"
            else regression_metrics(y, pred))


def _scores(est: Any, tr: dict[str, Any], evals: list[tuple[str, dict[str, Any]]]
            ) -> dict[str, dict[str, Any]]:
    scores: dict[str, dict[str, Any]] = {}
    for kind, s in evals:
        name = s["name"] if s["name"] not in scores else f"{s['name']} [{s['key'][:8]}]"
        m = _metrics(tr["task"], s["y"], _with_features(s, est.predict))
        sp = _z_spectrum(est, s)
        scores[name] = {"kind": kind, "key": s["key"], **m, "sve": sp.sve, "lsvr": sp.lsvr}
    return scores


def _check_val_is_separate(val: str | None, val_store: dict[str, Any] | None,
                           tr: dict[str, Any], evals: list[tuple[str, dict[str, Any]]]) -> None:
    """``--val`` must be none of the stores trained on or reported."""
    if val_store is None:
        return
    for kind, s in [("--train", tr)] + evals:
        if s["key"] == val_store["key"]:
            where = {"id": "--test", "ood": "an --ood store"}.get(kind, kind)
            raise ConfigError(f"--val {val} is {where}: choosing on it would select on data "
                              "the results report or train on. Pass a separate validation "
                              "store, or leave out --val to carve one from --train.")


def _select(tr: dict[str, Any], val_store: dict[str, Any] | None, method: str,
            grid: tuple[list[dict[str, Any]], list[dict[str, Any]]], seeds: list[int],
            labels_of: Any, val_fraction: float, metric: str, data_seed: int | None
            ) -> tuple[dict[int, Any], dict[str, Any], int]:
    """Train every (point, seed) on the fit rows, score each on validation, choose.
    ``grid``: each point's full parameters, and the grid's own values (recorded).

    Returns the chosen point's heads by seed (with fit seconds), the ``selection``
    record and the number of rows trained on. Only training rows are read here."""
    from featstore.tuners.grid import fit_grid

    points, labels = grid
    if val_store is None:
        fit_idx, val_idx = selection.carve(tr["y"], val_fraction, tr["task"])
        source = {"source": "carved from train", "fraction": val_fraction,
                  "split_seed": selection.SPLIT_SEED, "stratified": tr["task"] != "regression",
                  "n": int(len(val_idx))}
    else:
        fit_idx, val_idx = np.arange(len(tr["y"])), None
        source = {"source": "store", "name": val_store["name"], "key": val_store["key"],
                  "n": int(len(val_store["y"]))}
    keep = np.zeros(len(tr["y"]), bool)
    keep[fit_idx] = True

    def rows(s: dict[str, Any], mask: np.ndarray | None, fn: Any) -> Any:
        if mask is None:
            return _with_features(s, fn)
        if s["X"] is not None:
            return fn(s["X"][mask])
        with open_store(s["path"]) as fs:
            return fn(selection.RowSubset(fs, mask))

    heads: dict[tuple[int, int], Any] = {}
    seconds: dict[int, float] = {}
    # label noise differs per seed, so the seeds share no pass then
    noisy = labels_of(seeds[0])[0] is not tr["y"]
    groups = [[s] for s in seeds] if noisy else [seeds]
    for group in groups:
        y_fit = labels_of(group[0])[0][keep]
        ests = {(i, seed): create_tuner(method, dim=tr["dim"], random_state=seed,
                                        task=tr["task"], **p)
                for seed in group for i, p in enumerate(points)}
        t0 = time.perf_counter()
        rows(tr, keep, lambda X: fit_grid(list(ests.values()), X, y_fit, data_seed=data_seed))
        for seed in group:  # one pass trained them all: each seed's share of the time
            seconds[seed] = (time.perf_counter() - t0) / len(group)
        heads.update(ests)
    vs = val_store or tr
    vmask = None if val_store is not None else ~keep
    y_val = _val_labels(vs, vmask, labels_of, seeds)
    per_point: list[dict[int, float]] = [{} for _ in points]
    val_metrics: dict[tuple[int, int], dict[str, float]] = {}
    for (i, seed), est in heads.items():
        m = _metrics(tr["task"], y_val[seed], rows(vs, vmask, est.predict))
        val_metrics[(i, seed)] = m
        per_point[i][seed] = m[metric]
    best = selection.choose(per_point, metric)
    sel = {"on": "val", "metric": metric, "val": source, "data_seed": data_seed,
           "chosen": labels[best], "chosen_index": best,
           "points": [{"params": labels[i], "val": {
               "mean": float(np.mean(list(per_point[i].values()))),
               "std": (float(np.std(list(per_point[i].values()), ddof=1))
                       if len(seeds) > 1 else None),  # sample std; None with one seed
               "per_seed": {str(seed): val_metrics[(i, seed)] for seed in seeds}}}
               for i in range(len(points))]}
    return {seed: (heads[(best, seed)], seconds[seed]) for seed in seeds}, sel, int(keep.sum())


def _val_labels(vs: dict[str, Any], vmask: np.ndarray | None, labels_of: Any, seeds: list[int]
                ) -> dict[int, np.ndarray]:
    """Validation labels per seed: a carved split keeps the training labels it was cut
    from (noisy too, with --train-noise: they are all the user has); a store its own."""
    if vmask is None:
        return {seed: vs["y"] for seed in seeds}
    return {seed: labels_of(seed)[0][vmask] for seed in seeds}


def _summarize(runs: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Mean and sample std (ddof = 1) over seeds of every metric; the std is ``None``
    with one seed, where it is undefined (printed as "n/a")."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for name in runs[0]["scores"]:
        out[name] = {"kind": runs[0]["scores"][name]["kind"]}  # type: ignore[dict-item]
        for metric, v in runs[0]["scores"][name].items():
            if isinstance(v, float):
                vals = np.array([r["scores"][name][metric] for r in runs])
                out[name][metric] = {"mean": float(vals.mean()),
                                     "std": float(vals.std(ddof=1)) if len(vals) > 1 else None}
    return out


def evaluate(head: str, stores: list[str]) -> list[dict[str, Any]]:
    """Metrics of a saved head on labelled stores of the same backbone."""
    est = load_head(head)
    out = []
    for path in stores:
        with open_store(path) as fs:
            if fs.labels is None:
                raise DataError(f"{path} has no labels to evaluate against; use `featstore predict`.")
            y = fs.labels[fs.valid]
            pred = est.predict(fs)  # checks that the store's backbone matches the head's
            name = f"{fs.metadata['dataset']['name']}/{fs.metadata['dataset']['split']}"
            where = str(fs.path)
        m = (classification_metrics(y, pred) if est.task_ == "classification"
             else regression_metrics(y, pred))
        out.append({"store": where, "name": name, **m})
    return out


def predict(head: str, store: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """Sample ids, predictions and (for classifiers) probabilities of a saved head."""
    est = load_head(head)
    with open_store(store) as fs:
        ids = fs.sample_ids[fs.valid].tolist()
        pred = est.predict(fs)
        proba = est.predict_proba(fs) if est.task_ == "classification" else None
    return ids, pred, proba


def load_head(head: str) -> Any:
    from featstore.tuners.base import BaseTuner

    p = Path(head)
    if p.suffix in (".json", ".safetensors"):  # either file of the pair names the head
        p = p.with_suffix("")
    if not p.with_suffix(".json").exists():
        raise NotFoundError(f"No saved head at {head} (expected {p.with_suffix('.json')} and "
                        f"{p.with_suffix('.safetensors')}); save heads with `featstore tune --save-heads DIR`.")
    return BaseTuner.load(p)
