"""A grid of heads trained in one pass (featstore.tuners.grid) against one head, as ratios
measured in one run.

    python benchmarks/tuner_grid.py [--repeats 3] [--n 1024] [--epochs 2] [--dims 384 1280]
        [--methods lp mlp nmtune] [--no-lbfgs]

1. For LP, MLP and NMTune at each D: the time of a 24-head grid (4 lr x 2 weight decays
   x 3 initialisations, one shared data order, so one pass) / the time of one head
   with the same data, epochs and batch size (goal <= 4).
2. The LP grid's time / scikit-learn's L-BFGS ``LogisticRegression`` fitted for the
   same 24 configurations (8 values of C x 3 seeds; L-BFGS is deterministic, so a
   seed repeats the fit: that is what a 24-point sweep costs with it).

Grid and single head are timed interleaved (grid, single, grid, ...), medians over
``--repeats``; the load average is recorded per point. Synthetic class-structured
features (10 classes). Saved as results/tuner_grid.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from _common import machine, print_table, save

RESULTS = Path(__file__).parent / "results" / "tuner_grid.json"
LRS = {"lp": (1e-3, 3e-3, 1e-2, 3e-2), "mlp": (1e-4, 3e-4, 1e-3, 3e-3),
       "nmtune": (1e-4, 3e-4, 1e-3, 3e-3)}
WDS = (0.0, 1e-4)
INITS = (0, 1, 2)


def features(n: int, d: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, d)).astype(np.float32)
    y = np.arange(n) % classes
    return (centers[y] + 2 * rng.normal(size=(n, d))).astype(np.float32), y


def make(method: str, **kw):
    from featstore.tuners import LinearProbe, MLPTuner, NMTune

    return {"lp": LinearProbe, "mlp": MLPTuner, "nmtune": NMTune}[method](**kw)


def one_point(method: str, d: int, args) -> dict:
    from featstore.tuners.grid import fit_grid

    X, y = features(args.n, d)
    common = dict(epochs=args.epochs, batch_size=args.batch_size, device="cpu")
    grid_t, one_t, mode = [], [], ""
    for _ in range(args.repeats):
        heads = [make(method, lr=lr, weight_decay=wd, random_state=s, **common)
                 for lr in LRS[method] for wd in WDS for s in INITS]
        t0 = time.perf_counter()
        fit_grid(heads, X, y, data_seed=0)
        grid_t.append(time.perf_counter() - t0)
        mode = heads[0].stack_mode_
        t0 = time.perf_counter()
        make(method, lr=LRS[method][2], random_state=0, **common).fit(X, y)
        one_t.append(time.perf_counter() - t0)
    g, o = float(np.median(grid_t)), float(np.median(one_t))
    return {"method": method, "D": d, "heads": len(heads), "stack_mode": mode,
            "grid_s": round(g, 3), "one_head_s": round(o, 3), "grid/one": round(g / o, 2),
            "goal": "<= 4", "loadavg": round(os.getloadavg()[0], 2)}


def lbfgs_point(d: int, args) -> dict:
    """The LP grid against 24 scikit-learn L-BFGS fits (8 C x 3 seeds), interleaved."""
    from sklearn.linear_model import LogisticRegression

    from featstore.tuners.grid import fit_grid

    X, y = features(args.n, d)
    common = dict(epochs=args.epochs, batch_size=args.batch_size, device="cpu")
    grid_t, lb_t = [], []
    for _ in range(args.repeats):
        heads = [make("lp", lr=lr, weight_decay=wd, random_state=s, **common)
                 for lr in LRS["lp"] for wd in WDS for s in INITS]
        t0 = time.perf_counter()
        fit_grid(heads, X, y, data_seed=0)
        grid_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c in 10.0 ** np.arange(-4, 4):
            for s in INITS:
                LogisticRegression(C=c, max_iter=1000, random_state=s).fit(X, y)
        lb_t.append(time.perf_counter() - t0)
    g, lb = float(np.median(grid_t)), float(np.median(lb_t))
    acc_lp = max(h.score(X, y) for h in heads)
    return {"D": d, "configs": 24, "lp_grid_s": round(g, 3), "lbfgs_s": round(lb, 3),
            "lp_grid/lbfgs": round(g / lb, 3), "lp_grid_best_train_acc": round(acc_lp, 3),
            "loadavg": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--n", type=int, default=1024)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--dims", type=int, nargs="+", default=[384, 1280])
    ap.add_argument("--methods", nargs="*", default=["lp", "mlp", "nmtune"])
    ap.add_argument("--no-lbfgs", action="store_true", help="skip the L-BFGS comparison")
    args = ap.parse_args()
    info = machine()
    rows: list[dict] = []
    lb: list[dict] = []
    # rows of an earlier run that this run does not measure are kept (each row is a
    # ratio measured within itself, with its own load average), so that a slow point
    # can be measured in a separate run
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}

    def checkpoint() -> None:  # saved after every point: a long run killed keeps its rows
        new_keys = {(r["method"], r["D"]) for r in rows}
        kept = [r for r in old.get("grid_vs_one_head", []) if (r["method"], r["D"]) not in new_keys]
        kept_lb = [r for r in old.get("lp_grid_vs_lbfgs", []) if r["D"] not in {x["D"] for x in lb}]
        save("tuner_grid", {**info, "settings": vars(args), "grid_vs_one_head": kept + rows,
                            "lp_grid_vs_lbfgs": kept_lb + lb, "torch": torch.__version__})

    for d in args.dims:
        for m in args.methods:
            rows.append(one_point(m, d, args))
            print(rows[-1], flush=True)
            checkpoint()
    for d in [] if args.no_lbfgs else args.dims:
        lb.append(lbfgs_point(d, args))
        print(lb[-1], flush=True)
        checkpoint()
    for table in (rows, lb):
        if table:
            print_table(table, list(table[0]))
    print(f"saved {RESULTS}")


if __name__ == "__main__":
    main()
