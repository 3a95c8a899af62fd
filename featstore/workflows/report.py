"""`featstore report`: Table-2-shaped tables and plots from a results file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from featstore.analysis.plots import axis_start_note
from featstore.errors import DataError, MissingDependencyError, NotFoundError
from featstore.tuners.registry import list_tuners


def method_rank(method: str) -> int:
    """Where a method goes in tables and legends: the tuner registry's order (the
    baseline first); methods it does not know (from an older results file) go last."""
    order = list_tuners()
    return order.index(method) if method in order else len(order)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"No results file at {path}. Write one with `featstore tune ... --results {path}`.")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {n} is not JSON ({err}).") from err
    if not records:
        raise DataError(f"{path} holds no results yet.")
    return records


def noise_of(rec: dict[str, Any]) -> tuple[str, float] | None:
    """(where, ratio) of the label noise behind a run: downstream training labels
    (``tune --train-noise``) or the backbone's pre-training (its model card)."""
    noise = rec.get("noise") or {}
    if noise.get("train_noise"):
        return "downstream", float(noise["train_noise"])
    pre = noise.get("pretraining")
    if isinstance(pre, dict) and pre.get("ratio") is not None:
        return "pre-training", float(pre["ratio"])
    return None


def sample_std(values: Any) -> float | None:
    """The sample standard deviation (ddof = 1) over seeds; ``None`` for one seed, where
    it is undefined (tables print "n/a")."""
    v = np.asarray(list(values), dtype=float)
    return float(v.std(ddof=1)) if len(v) > 1 else None


def mean_std(values: Any, fmt: str = ".2f") -> str:
    """"mean ± sample std", or "mean ± n/a" for one seed."""
    v = list(values)
    sd = sample_std(v)
    return f"{np.mean(v):{fmt}} ± " + ("n/a" if sd is None else f"{sd:{fmt}}")


def std_note(seed_counts: Any) -> str:
    """The footnote every table carries: which std it shows."""
    counts = sorted(set(seed_counts))
    over = (f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
    note = f"mean ± sample std (ddof = 1) over {over} seeds"
    if counts and counts[0] == 1:
        note += "; n/a where a row has one seed (see the seeds column)"
    return note


#: What legends call each method; a method not listed keeps its registry name.
METHOD_WORDS = {"lp": "linear probe", "mlp": "MLP head", "nmtune": "NMTune",
                "nmtune-authors": "NMTune (authors' settings)", "logreg": "logistic regression"}
_OPTION_WORDS = {"epochs": "{} epochs", "lr": "lr {}", "weight_decay": "weight decay {}",
                 "batch_size": "batch {}", "hidden": "{} hidden units", "depth": "{} layers",
                 "lambda_svd": "λ_svd {}", "lambda_cov": "λ_cov {}", "lambda_mse": "λ_mse {}",
                 "svd_top_k": "top-{} singular values", "schedule": "{} lr schedule",
                 "activation": "{} activation"}
_NOT_OPTIONS = {"device", "stream", "task", "random_state"}


def _defaults(method: str) -> dict[str, Any]:
    try:
        from featstore.tuners.registry import get_tuner

        return get_tuner(method).estimator_class()().get_params()
    except Exception:  # a method this install does not know: show every option
        return {}


def option_words(params: dict[str, Any]) -> list[str]:
    return [_OPTION_WORDS.get(k, k.replace("_", " ") + " {}").format(v)
            for k, v in params.items() if k not in _NOT_OPTIONS]


def run_label(rec: dict[str, Any], train: bool = True, noise: bool = True) -> str:
    """A legend entry in words: the method, its options that differ from the tuner's
    defaults, what was chosen on validation, the noise, the training set. E.g.
    "linear probe (lr 0.01 chosen on val) — mnist-5k"."""
    defaults = _defaults(rec["method"])
    chosen = (rec.get("selection") or {}).get("chosen") or {}
    params = rec.get("params") or {}
    fixed = option_words({k: v for k, v in params.items()
                          if k not in chosen and (k not in defaults or defaults[k] != v)})
    picked = option_words(chosen)
    if picked:
        fixed.append(", ".join(picked) + f" chosen on {rec['selection']['on']}")
    text = METHOD_WORDS.get(rec["method"], rec["method"])
    text += f" ({', '.join(fixed)})" if fixed else ""
    where = noise_of(rec) if noise else None
    if where:
        text += f", {100 * where[1]:g}% {where[0]} label noise"
    if train:
        text += f" — {rec['train']['name'].removesuffix('/train')}"
    return text


def results_table(records: list[dict[str, Any]], metric: str = "accuracy") -> Any:
    """Methods as rows, evaluation sets as columns (mean ± sample std over seeds, see
    :func:`std_note`), ID/OOD averages of the means, and the number of seeds."""
    try:
        import pandas as pd
    except ImportError as err:
        raise MissingDependencyError("Reports need pandas: pip install 'featstore[tables]'.") from err
    # (method, train, params) -> eval set -> seed -> value; a later run of a seed replaces it
    rows: dict[tuple[str, str, str], dict[str, dict[int, float]]] = {}
    kinds: dict[str, str] = {}  # column -> the kind it first had (for column order)
    kind_of: dict[tuple[tuple[str, str, str], str], str] = {}
    ratio_of: dict[tuple[str, str, str], float] = {}  # rows in order of noise ratio
    scale = 1 if metric in ("sve", "lsvr", "mse") else 100
    for rec in records:
        params = {k: v for k, v in (rec.get("params") or {}).items() if k != "device"}
        label = json.dumps(params, sort_keys=True) if params else ""
        noise = noise_of(rec)
        if noise:
            label = f"[{100 * noise[1]:g}% {noise[0]} noise] {label}".strip()
        if rec.get("selection"):
            label = f"{label} (selected on {rec['selection']['on']} by {rec['selection']['metric']})"
        rowkey = (rec["method"], rec["train"]["name"], label)
        ratio_of[rowkey] = noise[1] if noise else 0.0
        row = rows.setdefault(rowkey, {})
        for run in rec["runs"]:
            for name, sc in run["scores"].items():
                if metric in sc:
                    row.setdefault(name, {})[run["seed"]] = scale * sc[metric]
                    # a set is ID for the job trained on its domain, OOD for the others
                    kind_of[(rowkey, name)] = sc["kind"]
                    kinds.setdefault(name, sc["kind"])
    cols = sorted(kinds, key=lambda c: (kinds[c] != "id", c))
    out = []
    def row_order(item: Any) -> tuple[Any, ...]:
        (method, train, label) = item[0]
        return train, method_rank(method), ratio_of[item[0]], label

    for (method, train, label), row in sorted(rows.items(), key=row_order):
        line: dict[str, Any] = {"train": train, "method": f"{method} {label}".strip(),
                                "seeds": max((len(v) for v in row.values()), default=0)}
        for c in cols:
            v = list(row.get(c, {}).values())
            line[c] = mean_std(v) if v else ""
        for kind in ("id", "ood"):
            means = [np.mean(list(row[c].values())) for c in cols
                     if row.get(c) and kind_of[((method, train, label), c)] == kind]
            line[f"{kind.upper()} avg"] = f"{np.mean(means):.2f}" if means else ""
        out.append(line)
    return pd.DataFrame(out)


def _point(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in params.items()) or "(defaults)"


def selection_rows(records: list[dict[str, Any]], every_point: bool = False
                   ) -> list[dict[str, str]]:
    """The configurations chosen on validation (``every_point``: the whole grid, the
    chosen point marked), one row each, in the tables' order."""
    rows = []
    for rec in sorted((r for r in records if r.get("selection")),
                      key=lambda r: (r["train"]["name"], method_rank(r["method"]))):
        sel = rec["selection"]
        scale = 1 if sel["metric"] == "mse" else 100
        val = sel["val"]
        where = (f"{val['fraction']:g} of train" if val["source"] != "store"
                 else f"store {val['name']}")
        points = enumerate(sel["points"]) if every_point else [(sel["chosen_index"],
                                                                sel["points"][sel["chosen_index"]])]
        for i, p in points:
            row = {"train": rec["train"]["name"], "method": rec["method"],
                   "grid point": _point(p["params"]),
                   f"val {sel['metric']}": mean_std(
                       scale * m[sel["metric"]] for m in p["val"]["per_seed"].values()),
                   "validation": f"{where} (n={val['n']})", "seeds": str(len(rec["runs"]))}
            if every_point:
                row["chosen"] = "yes" if i == sel["chosen_index"] else ""
            rows.append(row)
    return rows


def rows_markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def markdown_table(df: Any) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def methods_plot(records: list[dict[str, Any]], path: Path, metric: str = "accuracy") -> Path:
    """One row of panels per training set, one panel per evaluation set (ID first):
    every method as a dot with its sample std over seeds, on an axis that starts near
    the data (stated on the axis), so gaps under a point stay visible."""
    from featstore.analysis.plots import dot_grid

    scale = 1 if metric in ("sve", "lsvr", "mse") else 100
    # train -> label -> eval set -> seed -> value (a later run of a seed replaces it)
    per: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    kinds: dict[tuple[str, str], str] = {}
    order: dict[tuple[str, str], tuple[Any, ...]] = {}
    for rec in records:
        train = rec["train"]["name"]
        label = run_label(rec, train=False)
        noise = noise_of(rec)
        order[(train, label)] = (method_rank(rec["method"]), noise[1] if noise else 0.0, label)
        for run in rec["runs"]:
            for name, sc in run["scores"].items():
                if metric in sc:
                    per.setdefault(train, {}).setdefault(label, {}).setdefault(name, {})[
                        run["seed"]] = scale * sc[metric]
                    kinds[(train, name)] = sc["kind"]
    rows = []
    for train in sorted(per):
        labels = sorted(per[train], key=lambda lab: order[(train, lab)])
        sets = sorted({n for lab in labels for n in per[train][lab]},
                      key=lambda n: (kinds[(train, n)] != "id", n))
        cols = []
        for name in sets:
            vals = [list(per[train][lab].get(name, {}).values()) for lab in labels]
            cols.append({"title": f"{name} ({kinds[(train, name)].upper()})",
                         "means": [float(np.mean(v)) if v else None for v in vals],
                         "stds": [sample_std(v) for v in vals]})
        rows.append({"title": train, "labels": labels, "cols": cols})
    unit = " (%)" if scale == 100 else ""
    return dot_grid(rows, path, f"{metric}{unit}, mean ± sample std")


def spectrum_scatter(records: list[dict[str, Any]], path: Path) -> Path | None:
    """SVE of the tuned features vs ID accuracy, and LSVR vs OOD accuracy (paper Fig. 3/5):
    one dot per seed, the colour naming the method, the marker the training set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    points: dict[str, list[tuple[str, str, float, float]]] = {"id": [], "ood": []}
    order: dict[str, int] = {}
    for rec in records:
        label = run_label(rec, train=False, noise=False)
        order[label] = method_rank(rec["method"])
        for run in rec["runs"]:
            for sc in run["scores"].values():
                if "sve" in sc and "accuracy" in sc:
                    x = sc["sve"] if sc["kind"] == "id" else sc["lsvr"]
                    points[sc["kind"]].append((label, rec["train"]["name"], x, 100 * sc["accuracy"]))
    if not points["id"]:
        return None
    methods = sorted(order, key=lambda m: (order[m], m))
    trains = sorted({t for pts in points.values() for _, t, _, _ in pts})
    color = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    marker = {t: "osD^vP*Xph"[i % 10] for i, t in enumerate(trains)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), layout="constrained")
    for ax, kind, xlabel in ((axes[0], "id", "SVE of tuned features (ID)"),
                             (axes[1], "ood", "LSVR of tuned features (OOD)")):
        for m, t, x, y in points[kind]:
            ax.scatter(x, y, s=22, color=color[m], marker=marker[t], alpha=0.8)
        note = axis_start_note(ax.get_ylim()[0])
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{kind.upper()} accuracy (%)" + (f" — {note}" if note else ""))
        ax.set_title("one dot per seed", fontsize=8)
        ax.grid(alpha=0.3)
    handles = ([Line2D([], [], ls="", marker="o", color=color[m], label=m) for m in methods]
               + [Line2D([], [], ls="", marker=marker[t], color="grey", label=f"trained on {t}")
                  for t in trains])
    fig.legend(handles=handles, fontsize=7, loc="outside lower center",
               ncols=min(4, len(handles)))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def noise_plot(records: list[dict[str, Any]], path: Path, metric: str = "accuracy") -> Path | None:
    """Mean ID and OOD accuracy against the noise ratio, one line per method (paper Fig. 2
    and 5): the accuracy averaged over training sets (jobs), mean ± std over seeds.
    Drawn when the runs span at least two noise ratios (0 counts as one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # (kind, method) -> ratio -> seed -> one value per job (mean over its sets of that kind);
    # the plotted mean ± std is over seeds of the job-averaged accuracy
    per: dict[tuple[str, str], dict[float, dict[int, list[float]]]] = {}
    wheres = set()
    for rec in records:
        noise = noise_of(rec)
        ratio = noise[1] if noise else 0.0
        if noise:
            wheres.add(noise[0])
        for run in rec["runs"]:
            for kind in ("id", "ood"):
                vals = [sc[metric] for sc in run["scores"].values() if sc["kind"] == kind and metric in sc]
                if vals:
                    per.setdefault((kind, run_label(rec, train=False, noise=False)), {}).setdefault(ratio, {}).setdefault(
                        run["seed"], []).append(100 * float(np.mean(vals)))
    acc = {key: {r: [float(np.mean(v)) for v in seeds.values()] for r, seeds in series.items()}
           for key, series in per.items()}
    ratios = {r for series in acc.values() for r in series}
    if len(ratios) < 2:
        return None
    kinds = [k for k in ("id", "ood") if any(key[0] == k for key in acc)]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 4), layout="constrained",
                             squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        for (k, method), series in sorted(acc.items(), key=lambda kv: kv[0][1]):
            if k != kind:
                continue
            xs = sorted(series)
            means = [np.mean(series[x]) for x in xs]
            stds = [sample_std(series[x]) or 0.0 for x in xs]
            ax.errorbar([100 * x for x in xs], means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xlabel(f"{' / '.join(sorted(wheres)) or ''} noise ratio (%)".strip())
        note = axis_start_note(ax.get_ylim()[0])
        ax.set_ylabel(f"{kind.upper()} {metric} (%), mean ± sample std over seeds"
                      + (f"\n{note}" if note else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _over(df: Any) -> str:
    counts = sorted(set(df["seeds"]))
    return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]} (the seeds column)"


def write_report(results: str | Path, out_dir: str | Path, metric: str = "accuracy",
                 grid: bool = False) -> dict[str, str]:
    """The report's files; ``grid``: also list every grid point of runs that selected
    a configuration on validation (the chosen ones are always listed)."""
    records = read_results(results)
    df = results_table(records, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "table.csv", "latex": out / "table.tex", "markdown": out / "report.md",
             "bars": out / "methods.png"}
    df.to_csv(paths["csv"], index=False)
    paths["latex"].write_text(df.to_latex(index=False))
    methods_plot(records, paths["bars"], metric)
    scatter = spectrum_scatter(records, out / "spectrum_vs_accuracy.png")
    if scatter:
        paths["spectrum_vs_accuracy"] = scatter
    noise_png = noise_plot(records, out / "accuracy_vs_noise.png", metric if metric not in ("sve", "lsvr") else "accuracy")
    if noise_png:
        paths["accuracy_vs_noise"] = noise_png
    note = std_note(df["seeds"]) + "; ID/OOD avg: the mean of the row's ID/OOD means"
    md = ["# featstore report\n", f"From `{results}`: {len(records)} tune runs; {metric} "
          f"{'in % ' if metric not in ('sve', 'lsvr', 'mse') else ''}as {note}. "
          "ID = in-domain test split, OOD = other domains with the same labels.\n",
          markdown_table(df), f"\n*± is the sample std (ddof = 1) over {_over(df)} seeds.*", ""]
    for extra in ("sve", "lsvr"):
        if metric != extra and any(extra in sc for r in records for sc in r["runs"][0]["scores"].values()):
            md += [f"## {extra.upper()} of the tuned features z (row-L2, on each evaluation set)\n",
                   markdown_table(results_table(records, extra)),
                   f"\n*{std_note(df['seeds'])}.*", ""]
    chosen = selection_rows(records)
    if chosen:
        md += ["## Selected configurations\n", "Chosen on validation only (the test and OOD "
               "sets above evaluate the chosen heads). Validation score: mean ± sample std "
               "(ddof = 1) over the seeds column; n/a with one seed.\n", rows_markdown(chosen), ""]
    if grid and chosen:
        md += ["## Every grid point\n", rows_markdown(selection_rows(records, every_point=True)),
               ""]
    md += [f"![methods]({paths['bars'].name})", "",
           "*Dots: mean over seeds; bars: ± sample std; hollow dots: one seed. Each panel's "
           "axis starts near its data, as its label says.*", ""]
    if scatter:
        md += ["![SVE vs ID accuracy, LSVR vs OOD accuracy](spectrum_vs_accuracy.png)", ""]
    if noise_png:
        md += ["![accuracy vs noise ratio](accuracy_vs_noise.png)", ""]
    paths["markdown"].write_text("\n".join(md))
    return {k: str(v) for k, v in paths.items()}
