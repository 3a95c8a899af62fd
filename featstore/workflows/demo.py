"""The built-in end-to-end run behind `featstore demo`: extract → tune → spectrum → report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from featstore.analysis.spectrum import spectrum_of_store
from featstore.extract import ExtractConfig, extract
from featstore.workflows.report import write_report
from featstore.store import open_store
from featstore.tuners.registry import list_tuners
from featstore.workflows.tuning import tune

BACKBONE = "efficientnet-lite0"
#: Lite0 at 112 px keeps ~100 img/s on 2 CPU cores (benchmarks/extract_throughput.py).
IMAGE_SIZE = 112


def run_demo(root: str = "featstore-demo", *, limit: int | None = None, device: str = "auto",
             seeds: int = 2, epochs: int = 30,
             echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """MNIST-5k (ID) and UCI digits (OOD) through EfficientNet-Lite0 once, then the
    heads the tuner registry flags for the demo (LP, MLP, NMTune) on the cache, the
    spectra, and a report. Returns a summary."""
    say = echo or (lambda s: None)
    results = []
    for dataset, splits in [("mnist-5k", ["train", "test"]), ("uci-digits", ["test"])]:
        say(f"[1/4] extract: {BACKBONE} over {dataset} {'+'.join(splits)} (cached after the first run)")
        cfg = ExtractConfig(backbones=[BACKBONE], datasets=[dataset], splits=splits, root=root,
                            image_size=IMAGE_SIZE, device=device, limit=limit)
        results += extract(cfg)
    by = {(r.dataset, r.split): r.path for r in results}
    train, test, ood = by[("mnist-5k", "train")], by[("mnist-5k", "test")], by[("uci-digits", "test")]

    results_file = Path(root) / "results.jsonl"
    results_file.unlink(missing_ok=True)  # the demo's report shows this run only
    tuned = {}
    for method in list_tuners(demo=True):
        say(f"[2/4] tune: {method} on the cached features, {seeds} seeds, {epochs} epochs")
        params = {"epochs": epochs, "device": device}
        tuned[method] = tune(train, test, [ood], method, seeds=seeds, params=params,
                             results=str(results_file))["summary"]

    say("[3/4] spectrum of the raw features (row-L2)")
    spectra = {}
    for name, path in (("mnist-5k/train", train), ("uci-digits/test", ood)):
        with open_store(path) as fs:
            sp = spectrum_of_store(fs, "l2")
        spectra[name] = {"sve": sp.sve, "lsvr": sp.lsvr, "effective_rank": sp.effective_rank}

    say("[4/4] report")
    report = write_report(results_file, Path(root) / "report")
    stored = [{"key": r.key, "dataset": r.dataset, "split": r.split,
               "shape": "x".join(map(str, r.shape)), "status": "cached" if r.cached else "extracted",
               "seconds": round(r.seconds, 1), "path": r.path} for r in results]
    return {"root": root, "stored": stored, "tuned": tuned, "spectra": spectra, "report": report}
