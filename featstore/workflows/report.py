"""`featstore report`: Table-2-shaped tables and plots from a results file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

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


def results_table(records: list[dict[str, Any]], metric: str = "accuracy") -> Any:
    """Methods as rows, evaluation sets as columns (mean ± std over seeds), ID/OOD averages."""
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
        line: dict[str, Any] = {"train": train, "method": f"{method} {label}".strip()}
        for c in cols:
            v = list(row.get(c, {}).values())
            line[c] = f"{np.mean(v):.2f} ± {np.std(v):.2f}" if v else ""
        for kind in ("id", "ood"):
            means = [np.mean(list(row[c].values())) for c in cols
                     if row.get(c) and kind_of[((method, train, label), c)] == kind]
            line[f"{kind.upper()} avg"] = f"{np.mean(means):.2f}" if means else ""
        out.append(line)
    return pd.DataFrame(out)


def markdown_table(df: Any) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _short(text: str, n: int, keep: str = "end") -> str:
    """Shorten long labels: paths keep their end, method settings their start."""
    if len(text) <= n:
        return text
    return "…" + text[-(n - 1):] if keep == "end" else text[: n - 1] + "…"


def bar_plot(df: Any, path: Path, metric: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in df.columns if c not in ("train", "method") and not c.endswith("avg")]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(cols) + 3), 4.2), layout="constrained")
    width = 0.8 / max(1, len(df))
    n = len(df)  # one distinct colour per row (tab10 would repeat after 10)
    colors = (plt.get_cmap("tab10")(np.arange(n)) if n <= 10 else
              plt.get_cmap("tab20")(np.arange(n)) if n <= 20 else
              plt.get_cmap("turbo")(np.linspace(0.05, 0.95, n)))
    for i, (_, row) in enumerate(df.iterrows()):
        means = [float(row[c].split(" ± ")[0]) if row[c] else np.nan for c in cols]
        stds = [float(row[c].split(" ± ")[1]) if row[c] else 0 for c in cols]
        ax.bar(np.arange(len(cols)) + i * width, means, width, yerr=stds, capsize=2, color=colors[i],
               label=_short(f"{row['method']} ({row['train']})", 60, keep="start"))
    ax.set_xticks(np.arange(len(cols)) + width * (len(df) - 1) / 2)
    ax.set_xticklabels([_short(c, 28) for c in cols], rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(f"{metric} (%)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def spectrum_scatter(records: list[dict[str, Any]], path: Path) -> Path | None:
    """SVE of the tuned features vs ID accuracy, and LSVR vs OOD accuracy (paper Fig. 3/5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points: dict[str, list[tuple[str, float, float]]] = {"id": [], "ood": []}
    for rec in records:
        for run in rec["runs"]:
            for name, sc in run["scores"].items():
                if "sve" in sc and "accuracy" in sc:
                    x = sc["sve"] if sc["kind"] == "id" else sc["lsvr"]
                    points[sc["kind"]].append((rec["method"], x, 100 * sc["accuracy"]))
    if not points["id"]:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, kind, xlabel in ((axes[0], "id", "SVE of tuned features (ID)"),
                             (axes[1], "ood", "LSVR of tuned features (OOD)")):
        for method in sorted({m for m, _, _ in points[kind]}):
            xs = [x for m, x, _ in points[kind] if m == method]
            ys = [y for m, _, y in points[kind] if m == method]
            ax.scatter(xs, ys, label=method, s=25)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"{kind.upper()} accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
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
                    per.setdefault((kind, rec["method"]), {}).setdefault(ratio, {}).setdefault(
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
        for (k, method), series in sorted(acc.items(), key=lambda kv: method_rank(kv[0][1])):
            if k != kind:
                continue
            xs = sorted(series)
            means = [np.mean(series[x]) for x in xs]
            stds = [np.std(series[x]) for x in xs]
            ax.errorbar([100 * x for x in xs], means, yerr=stds, marker="o", capsize=3, label=method)
        ax.set_xlabel(f"{' / '.join(sorted(wheres)) or ''} noise ratio (%)".strip())
        ax.set_ylabel(f"{kind.upper()} {metric} (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: str | Path, out_dir: str | Path, metric: str = "accuracy") -> dict[str, str]:
    records = read_results(results)
    df = results_table(records, metric)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "table.csv", "latex": out / "table.tex", "markdown": out / "report.md",
             "bars": out / "methods.png"}
    df.to_csv(paths["csv"], index=False)
    paths["latex"].write_text(df.to_latex(index=False))
    bar_plot(df, paths["bars"], metric)
    scatter = spectrum_scatter(records, out / "spectrum_vs_accuracy.png")
    if scatter:
        paths["spectrum_vs_accuracy"] = scatter
    noise_png = noise_plot(records, out / "accuracy_vs_noise.png", metric if metric not in ("sve", "lsvr") else "accuracy")
    if noise_png:
        paths["accuracy_vs_noise"] = noise_png
    md = ["# featstore report\n", f"From `{results}`: {len(records)} tune runs; {metric} "
          f"{'in % ' if metric not in ('sve', 'lsvr', 'mse') else ''}as mean ± std over seeds. "
          "ID = in-domain test split, OOD = other domains with the same labels.\n",
          markdown_table(df), ""]
    for extra in ("sve", "lsvr"):
        if metric != extra and any(extra in sc for r in records for sc in r["runs"][0]["scores"].values()):
            md += [f"## {extra.upper()} of the tuned features z (row-L2, on each evaluation set)\n",
                   markdown_table(results_table(records, extra)), ""]
    md += [f"![methods]({paths['bars'].name})", ""]
    if scatter:
        md += ["![SVE vs ID accuracy, LSVR vs OOD accuracy](spectrum_vs_accuracy.png)", ""]
    if noise_png:
        md += ["![accuracy vs noise ratio](accuracy_vs_noise.png)", ""]
    paths["markdown"].write_text("\n".join(md))
    return {k: str(v) for k, v in paths.items()}
