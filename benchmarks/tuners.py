"""Tuner costs, as ratios measured in one run.

    python benchmarks/tuners.py [--steps 20]

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


def main() -> None:
    from featstore.tuners.heads import TunerMLP
    from featstore.tuners.regularizers import (consistency_loss,
                                               covariance_and_singular_value_loss)

    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--steps-only", action="store_true",
                    help="Only parts 1-2 (step times); saved as results/tuners_steps.json.")
    args = ap.parse_args()
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
