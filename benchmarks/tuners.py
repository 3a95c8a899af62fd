"""Tuner costs, as ratios measured in one run.

    python benchmarks/tuners.py [--steps 20]
    python benchmarks/tuners.py --cost [--repeats 7] [--steps 5] [--threads 1]

``--cost``: NMTune step / MLP step at D in {384, 768, 1280, 2048} x B in {64, 256}
(goal <= 1.15), the two steps interleaved, medians over repeats, the load average
recorded per point, and where NMTune's extra time goes (Gram, eigh, backward product,
consistency term), measured alone. Saved as results/tuners_cost.json.

1. NMTune step time / MLP step time at D = 1280 and 2048, B = 256 (goal <= 1.15).
2. MLP tuner GFLOP/s (forward + backward) against a torch GEMM of the same size (goal >= 0.5).
3. LinearProbe against scikit-learn's L-BFGS logistic regression: time and accuracy on
   real EfficientNet-Lite0 features of MNIST-5k (benchmarks/.cache, see store_io.py).
4. Spectrum via the streamed Gram matrix against a full SVD: time and SVE/LSVR error.
5. A 24-run LP sweep on the cached store against the same sweep re-running the backbone
   (the backbone's cost is measured here on 256 images and multiplied out: re-running
   it for real would take hours).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from _common import print_table, save
from store_io import real_features


def step_time(model_fn, loss_fn, d: int, b: int, steps: int) -> float:
    torch.manual_seed(0)
    x, y = torch.randn(b, d), torch.randint(0, 10, (b,))
    tuner, head = model_fn(d), torch.nn.Linear(d, 10)
    opt = torch.optim.AdamW(list(tuner.parameters()) + list(head.parameters()), lr=1e-3)

    def one():
        z = tuner(x)
        loss = torch.nn.functional.cross_entropy(head(z), y) + loss_fn(z, x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        one()
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps


COST_DIMS, COST_BATCHES = (384, 768, 1280, 2048), (64, 256)


def _nmtune_penalty(z, f):
    """What NMTune's loss adds to MLP tuning (paper weights, top-1): the consistency term
    and both spectral terms from one float64 Gram matrix."""
    from featstore.tuners.regularizers import (consistency_loss,
                                               covariance_and_singular_value_loss)

    cov, svd = covariance_and_singular_value_loss(z, 1)
    return 0.01 * (consistency_loss(z, f) + cov + svd)


def _stepper(d: int, b: int, penalty):
    """One AdamW step of the paper's MLP (H = D) + classifier, with ``penalty(z, f)`` added."""
    from featstore.tuners.heads import TunerMLP

    torch.manual_seed(0)
    x, y = torch.randn(b, d).abs() + 0.1, torch.randint(0, 10, (b,))  # uncentred, as ReLU features
    tuner, head = TunerMLP(d, hidden=d), torch.nn.Linear(d, 10)
    opt = torch.optim.AdamW(list(tuner.parameters()) + list(head.parameters()), lr=1e-3)

    def one():
        z = tuner(x)
        loss = torch.nn.functional.cross_entropy(head(z), y)
        if penalty is not None:
            loss = loss + penalty(z, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return one


def _block(fn, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps


def _block_cpu(fn, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per call. The process's CPU time does not count the time it
    waits for a core, so on a loaded machine it measures the work, not the queue."""
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps


def _parts(d: int, b: int, repeats: int) -> dict:
    """NMTune's extra work at (D, B), each piece timed alone (medians of CPU ms)."""
    from featstore.tuners.regularizers import (consistency_loss,
                                               covariance_and_singular_value_loss)

    torch.manual_seed(1)
    z = (torch.randn(b, d).abs() + 0.1).requires_grad_(True)
    f = torch.randn(b, d)
    z64 = z.detach().double()
    g = z64 @ z64.T if b <= d else z64.T @ z64

    def reg_fwd_bwd():
        cov, svd = covariance_and_singular_value_loss(z, 1)
        (cov + svd).backward()

    def cons_fwd_bwd():
        consistency_loss(z, f).backward()

    def cast_and_gram():  # as NMTune forms it on the CPU: numpy's a @ a.T is BLAS syrk
        x = z.detach().double().numpy()
        return x @ x.T if b <= d else x.T @ x

    pieces = {"cast_and_gram_f64": cast_and_gram,
              "eigh_f64": lambda: torch.linalg.eigh(g),
              "backward_product_f64": lambda: g @ z64 if b <= d else z64 @ g,
              "spectral_terms_fwd_bwd": reg_fwd_bwd,
              "consistency_fwd_bwd": cons_fwd_bwd}
    out = {}
    for name, fn in pieces.items():
        fn()
        cpu = [_block_cpu(fn, 3)[1] for _ in range(repeats)]  # CPU time, as the ratios
        out[name + "_cpu_ms"] = round(1e3 * float(np.median(cpu)), 3)
    out["gram_size"] = min(b, d)
    return out


def cost(repeats: int, steps: int) -> None:
    """NMTune / MLP step-time ratios at the eight (D, B) points of the cost goal."""
    import os

    from _common import machine

    out: dict = {"goal": "nmtune_step / mlp_step <= 1.15", **machine(),
                 "ratios": "median over interleaved repeats of paired NMTune/MLP ratios, of "
                           "CPU time (ratio_cpu: the work, robust to a loaded machine) and "
                           "of wall time (ratio_wall)", "points": {}}
    rows = []
    for d in COST_DIMS:
        for b in COST_BATCHES:
            load0 = os.getloadavg()[0]
            mlp, nm = _stepper(d, b, None), _stepper(d, b, _nmtune_penalty)
            for fn in (mlp, nm, mlp, nm):  # warm-up (allocator, threads)
                fn()
            t_mlp, t_nm = [], []  # (wall, cpu) per repeat
            for r in range(repeats):  # interleaved, order alternating: drift hits both
                pair = (mlp, nm) if r % 2 == 0 else (nm, mlp)
                ta, tb = _block_cpu(pair[0], steps), _block_cpu(pair[1], steps)
                t_mlp.append(ta if r % 2 == 0 else tb)
                t_nm.append(tb if r % 2 == 0 else ta)
            wall = [n[0] / m[0] for n, m in zip(t_nm, t_mlp)]
            cpu = [n[1] / m[1] for n, m in zip(t_nm, t_mlp)]
            point = {"mlp_step_ms": 1e3 * float(np.median([t[0] for t in t_mlp])),
                     "nmtune_step_ms": 1e3 * float(np.median([t[0] for t in t_nm])),
                     "mlp_step_cpu_ms": 1e3 * float(np.median([t[1] for t in t_mlp])),
                     "nmtune_step_cpu_ms": 1e3 * float(np.median([t[1] for t in t_nm])),
                     "ratio_wall": float(np.median(wall)),
                     "ratio_wall_range": [float(min(wall)), float(max(wall))],
                     "ratio_cpu": float(np.median(cpu)),
                     "ratio_cpu_range": [float(min(cpu)), float(max(cpu))],
                     "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)],
                     "extra_work_alone": _parts(d, b, repeats)}
            out["points"][f"D={d},B={b}"] = point
            p = point["extra_work_alone"]
            rows.append({"D": d, "B": b, "ratio cpu": f"{point['ratio_cpu']:.3f}",
                         "ratio wall": f"{point['ratio_wall']:.3f}",
                         "mlp cpu ms": f"{point['mlp_step_cpu_ms']:.1f}",
                         "nmtune cpu ms": f"{point['nmtune_step_cpu_ms']:.1f}",
                         "gram+eigh+bwd cpu ms": f"{p['cast_and_gram_f64_cpu_ms']:.1f}+"
                                                 f"{p['eigh_f64_cpu_ms']:.1f}+"
                                                 f"{p['backward_product_f64_cpu_ms']:.1f}",
                         "load": f"{load0:.1f}"})
            print(rows[-1], flush=True)
    print_table(rows, list(rows[0]))
    print("saved", save("tuners_cost", out))


def main() -> None:
    from featstore.tuners.heads import TunerMLP
    from featstore.tuners.regularizers import (consistency_loss,
                                               covariance_and_singular_value_loss)

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--steps-only", action="store_true",
                    help="Only parts 1-2 (step times); saved as results/tuners_steps.json.")
    ap.add_argument("--cost", action="store_true",
                    help="Only the NMTune/MLP cost at the eight (D, B) points; saved as "
                         "results/tuners_cost.json.")
    ap.add_argument("--repeats", type=int, default=7, help="--cost: interleaved repeats.")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's). On a shared, loaded machine 1 "
                         "thread gives steadier ratios: with more threads than idle cores, "
                         "small LAPACK calls wait on busy threads (x10-100 slower).")
    args = ap.parse_args()
    if args.threads:  # torch's pool and the BLAS pools numpy/scipy use (NMTune's syrk)
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(limits=args.threads)
    if args.cost:
        cost(args.repeats, min(args.steps, 5))
        return
    out: dict = {"threads": torch.get_num_threads()}
    rows = []

    def mlp(d):
        return TunerMLP(d, hidden=d)

    def none(z, f):
        return z.new_zeros(())

    def nmtune(z, f):  # what NMTune's loss computes (the shared-Gram path)
        cov, svd = covariance_and_singular_value_loss(z, 1)
        return 0.01 * (consistency_loss(z, f) + cov + svd)

    for d in (1280, 2048):
        t_mlp = step_time(mlp, none, d, 256, args.steps)
        t_nm = step_time(mlp, nmtune, d, 256, args.steps)
        flops = 3 * 2 * 256 * (2 * d * d)  # two D×D layers, forward + 2× for backward
        a, w = torch.randn(256, d), torch.randn(d, d)
        for _ in range(3):
            a @ w
        t0 = time.perf_counter()
        for _ in range(args.steps):
            a @ w
        gemm = 2 * 256 * d * d / ((time.perf_counter() - t0) / args.steps) / 1e9
        tuner_gflops = flops / t_mlp / 1e9
        out[f"D={d}"] = {"mlp_step_s": t_mlp, "nmtune_step_s": t_nm, "ratio": t_nm / t_mlp,
                         "mlp_gflops": tuner_gflops, "gemm_gflops": gemm}
        rows.append({"what": f"NMTune / MLP step, D={d}, B=256", "value": f"{t_nm / t_mlp:.3f}",
                     "detail": f"{1e3 * t_nm:.1f} ms vs {1e3 * t_mlp:.1f} ms"})
        rows.append({"what": f"MLP step GFLOP/s / GEMM GFLOP/s, D={d}",
                     "value": f"{tuner_gflops / gemm:.2f}",
                     "detail": f"{tuner_gflops:.1f} vs {gemm:.1f} GFLOP/s"})

    if args.steps_only:
        print_table(rows, ["what", "value", "detail"])
        print("saved", save("tuners_steps", out))
        return
    xtr, ytr, xte, yte = real_features()
    from sklearn.linear_model import LogisticRegression

    from featstore.tuners import LinearProbe

    t0 = time.perf_counter()
    lp = LinearProbe(device="cpu").fit(xtr, ytr)
    t_lp = time.perf_counter() - t0
    t0 = time.perf_counter()
    sk = LogisticRegression(max_iter=1000).fit(xtr, ytr)
    t_sk = time.perf_counter() - t0
    out["lp_vs_sklearn"] = {"lp_s": t_lp, "sklearn_s": t_sk, "lp_acc": lp.score(xte, yte),
                            "sklearn_acc": float(sk.score(xte, yte))}
    rows.append({"what": "LinearProbe time / sklearn L-BFGS time", "value": f"{t_lp / t_sk:.2f}",
                 "detail": f"{t_lp:.1f} s (acc {lp.score(xte, yte):.3f}) vs {t_sk:.1f} s "
                           f"(acc {sk.score(xte, yte):.3f})"})

    from featstore.analysis.spectrum import spectrum_of_array, sve, lsvr

    big = np.resize(xtr, (50000, xtr.shape[1])).astype(np.float64)
    big += np.random.default_rng(0).normal(scale=1e-3, size=big.shape)  # no exact duplicates
    t0 = time.perf_counter()
    sp = spectrum_of_array(big, "none")
    t_gram = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = np.linalg.svd(big, compute_uv=False)
    t_svd = time.perf_counter() - t0
    err = max(abs(sp.sve - sve(ref)), abs(sp.lsvr - lsvr(ref)))
    out["spectrum"] = {"gram_s": t_gram, "svd_s": t_svd, "max_abs_error": err}
    rows.append({"what": "spectrum via Gram time / full SVD time, 50k x 1280",
                 "value": f"{t_gram / t_svd:.3f}", "detail": f"{t_gram:.2f} s vs {t_svd:.2f} s, "
                                                            f"SVE/LSVR error {err:.1e}"})

    # 24 LP runs on the cache vs the same runs re-running the backbone every epoch.
    from featstore.backbones import create_backbone
    from featstore.data import load_dataset

    t0 = time.perf_counter()
    for lr in (0.003, 0.01, 0.03, 0.1):
        for wd in (0.0, 1e-4):
            for seed in range(3):
                LinearProbe(lr=lr, weight_decay=wd, random_state=seed, device="cpu").fit(xtr, ytr)
    t_sweep = time.perf_counter() - t0
    bb = create_backbone("efficientnet-lite0", image_size=112)
    imgs = load_dataset("mnist-5k", "train", limit=256)
    x = torch.stack([bb.transform()(imgs.load(i)) for i in range(len(imgs))])
    t0 = time.perf_counter()
    for s in range(0, 256, 64):
        bb.encode(x[s:s + 64])
    per_image = (time.perf_counter() - t0) / 256
    backbone_s = 24 * 30 * len(xtr) * per_image
    out["sweep"] = {"cached_s": t_sweep, "backbone_every_epoch_s_estimate": backbone_s,
                    "backbone_images_per_s": 1 / per_image}
    rows.append({"what": "24-run LP sweep: backbone re-run / cached (estimate)",
                 "value": f"{backbone_s / t_sweep:.0f}x",
                 "detail": f"{t_sweep:.0f} s cached vs ~{backbone_s / 3600:.1f} h of forward passes "
                           f"at {1 / per_image:.0f} img/s"})
    print_table(rows, ["what", "value", "detail"])
    print("saved", save("tuners", out))


if __name__ == "__main__":
    main()
