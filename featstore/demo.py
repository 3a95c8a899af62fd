"""The built-in end-to-end run behind `featstore demo`."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .extract import ExtractConfig, extract
from .store import open_store

BACKBONE = "efficientnet-lite0"
IMAGE_SIZE = 112  # offline-assets.md: Lite0 at 112 px keeps ~100 img/s on 2 CPU cores


def run_demo(root: str = "featstore-demo", *, limit: int | None = None, device: str = "auto",
             echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Extract → list → probe. Returns a JSON-able summary."""
    say = echo or (lambda s: None)
    jobs = [("mnist-5k", ["train", "test"]), ("uci-digits", ["test"])]
    results = []
    for dataset, splits in jobs:
        say(f"extracting {BACKBONE} features of {dataset} {'+'.join(splits)} ...")
        cfg = ExtractConfig(backbones=[BACKBONE], datasets=[dataset], splits=splits, root=root,
                            image_size=IMAGE_SIZE, device=device, limit=limit)
        results += extract(cfg)
    stored = [{"key": r.key, "dataset": r.dataset, "split": r.split,
               "shape": "x".join(map(str, r.shape)), "status": "cached" if r.cached else "extracted",
               "seconds": round(r.seconds, 1), "path": r.path} for r in results]
    by = {(r.dataset, r.split): r.path for r in results}
    return {"root": root, "stored": stored, "probe": probe(by[("mnist-5k", "train")],
                                                           by[("mnist-5k", "test")],
                                                           by[("uci-digits", "test")])}


def probe(train: str, test: str, ood: str) -> dict[str, Any]:
    """A scikit-learn logistic regression on stored features (a sanity check, not tuning)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def load(path: str) -> tuple[np.ndarray, np.ndarray]:
        with open_store(path) as fs:
            ok = fs.valid
            return fs.load_features(dtype=np.float32)[ok], fs.labels[ok]

    (xtr, ytr), (xte, yte), (xood, yood) = load(train), load(test), load(ood)
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    clf.fit(xtr, ytr)
    return {"n_train": int(len(ytr)), "id_accuracy": float(clf.score(xte, yte)),
            "ood_accuracy": float(clf.score(xood, yood))}
