"""The paper's motivating experiment in miniature (docs/experiments/noisy-pretraining.md),
every step cached:

1. pre-train one timm model per noise ratio on Fashion-MNIST (symmetric label noise on
   the training labels, a clean validation split);
2. extract features of the downstream sets with each of them: MNIST-5k and UCI digits,
   each with its own train/test split;
3. the tuners the registry flags for the demo (LP, MLP, NMTune) over seeds: in-domain
   (train → test of the same set) and out-of-domain (MNIST-5k → UCI digits and back);
4. SVE/LSVR of every raw feature set; the report with the paper-shaped plots.

A rerun computes only what is new (another seed, tuner or ratio).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from featstore.errors import ConfigError, OtherRunExistsError
from featstore.tuners.registry import list_tuners

SIZES: dict[str, dict[str, Any]] = {
    # finishes in a few minutes on 2 CPU cores (CI runs it)
    "quick": dict(ratios=(0.0, 0.3), pretrain_limit=1500, pretrain_epochs=2, seeds=1,
                  tune_epochs=10, downstream_limit=600),
    # about 30 minutes on 2 CPU cores
    "default": dict(ratios=(0.0, 0.05, 0.1, 0.2, 0.3), pretrain_limit=6000, pretrain_epochs=5,
                    seeds=3, tune_epochs=30, downstream_limit=None),
}


@dataclass
class NoisyPretraining:
    root: str = "noisy-pretraining"
    model: str = "timm:test_resnet"
    pretrain_dataset: str = "fashion-mnist"
    ratios: tuple[float, ...] = SIZES["default"]["ratios"]
    pretrain_limit: int | None = SIZES["default"]["pretrain_limit"]
    pretrain_epochs: int = SIZES["default"]["pretrain_epochs"]
    image_size: int = 32
    downstream: tuple[str, ...] = ("mnist-5k", "uci-digits")
    downstream_limit: int | None = None
    methods: tuple[str, ...] = field(default_factory=lambda: tuple(list_tuners(demo=True)))
    seeds: int = SIZES["default"]["seeds"]
    tune_epochs: int = SIZES["default"]["tune_epochs"]
    device: str = "auto"
    workers: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in list_tuners()]
        if unknown or not self.methods:
            raise ConfigError(f"The 'methods' option must name tuners among "
                              f"{', '.join(list_tuners())}; got {list(self.methods)!r}.")

    @classmethod
    def sized(cls, size: str, **overrides: Any) -> "NoisyPretraining":
        if size not in SIZES:
            raise ConfigError(f"The 'size' option must be one of {', '.join(SIZES)}. Got {size!r} instead.")
        return replace(cls(**SIZES[size]), **{k: v for k, v in overrides.items() if v is not None})


def run(exp: NoisyPretraining, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    from featstore.analysis.spectrum import spectrum_of_store
    from featstore.extract import ExtractConfig, extract
    from featstore.data.noise import check_ratio
    from featstore.workflows.pretrain import PretrainConfig, pretrain
    from featstore.workflows.report import write_report
    from featstore.store import open_store
    from featstore.workflows.sweep import sweep
    from featstore.workflows.experiments.plots import spectrum_vs_noise

    say = echo or (lambda s: None)
    for r in exp.ratios:
        check_ratio(r)

    root = Path(exp.root)
    root.mkdir(parents=True, exist_ok=True)
    stores: dict[float, dict[tuple[str, str], str]] = {}
    cards = {}
    for i, ratio in enumerate(exp.ratios):
        out = root / "weights" / f"noise{100 * ratio:g}"
        say(f"[1/4] pretrain {exp.model} on {exp.pretrain_dataset}, {100 * ratio:g}% noise "
            f"({i + 1}/{len(exp.ratios)}) -> {out}")
        try:
            cards[ratio] = pretrain(PretrainConfig(
                model=exp.model, dataset=exp.pretrain_dataset, out=str(out),
                limit=exp.pretrain_limit, noise=ratio, epochs=exp.pretrain_epochs,
                image_size=exp.image_size, device=exp.device), echo=lambda s: say(f"      {s}"))
        except OtherRunExistsError as err:
            raise OtherRunExistsError(
                f"{root} was made with other pre-training options ({err}). For the "
                f"experiment: use another --root, or delete {root / 'weights'} to pre-train "
                "again.") from err
        say(f"[2/4] extract {', '.join(exp.downstream)} (train, test) with those weights")
        results = extract(ExtractConfig(
            backbones=[exp.model], datasets=list(exp.downstream), splits=["train", "test"],
            root=str(root / "features"), weights=str(out / "model.safetensors"),
            device=exp.device, limit=exp.downstream_limit, progress=False))
        stores[ratio] = {(r.dataset, r.split): r.path for r in results}

    (root / "experiment.json").write_text(json.dumps(asdict(exp), indent=2))
    jobs = []
    for ratio, by in stores.items():
        for ds in exp.downstream:
            others = [o for o in exp.downstream if o != ds]
            jobs.append({"name": f"{ds} noise{ratio}", "train": by[(ds, "train")],
                         "test": by[(ds, "test")], "ood": [by[(o, "test")] for o in others]})
    results_file = root / "results.jsonl"
    say(f"[3/4] tune {', '.join(exp.methods)} x {exp.seeds} seeds on {len(jobs)} jobs "
        "(runs already in results.jsonl are skipped)")
    summary = sweep({"results": str(results_file), "jobs": jobs, "methods": list(exp.methods),
                     "seeds": exp.seeds, "workers": exp.workers,
                     "params": {"epochs": exp.tune_epochs, "device": exp.device, **exp.extra}},
                    on_done=lambda rec, k, n: say(f"      {k}/{n} {rec['method']} "
                                                  f"{rec['train']['name']}"))
    say(f"      {summary['ran']} runs done, {summary['skipped']} cached; "
        f"{summary['forward_passes_avoided']:,} backbone forward passes avoided")

    say("[4/4] spectra of the raw features and the report")
    spectra = []
    for ratio, by in stores.items():
        for (ds, split), path in sorted(by.items()):
            with open_store(path) as fs:
                sp = spectrum_of_store(fs, "l2")
            spectra.append({"noise": ratio, "dataset": ds, "split": split, "sve": sp.sve,
                            "lsvr": sp.lsvr, "effective_rank": sp.effective_rank,
                            "n_features": sp.n_features})
    (root / "spectra.json").write_text(json.dumps(spectra, indent=2))
    report_dir = root / "report"
    report = write_report(results_file, report_dir)
    report["spectrum_vs_noise"] = str(spectrum_vs_noise(spectra, report_dir / "spectrum_vs_noise.png"))
    pre = [{"noise": r, "clean_val_accuracy": c["clean_val_accuracy"],
            "n_noisy": c["noise"]["n_noisy"], "n_train": c["dataset"]["n_train"]}
           for r, c in cards.items()]
    _append_markdown(Path(report["markdown"]), pre, spectra)
    return {"root": str(root), "pretraining": pre, "spectra": spectra, "report": report,
            "sweep": summary}


def _append_markdown(md: Path, pre: list[dict[str, Any]], spectra: list[dict[str, Any]]) -> None:
    lines = ["", "## Pre-training", "", "| noise | wrong training labels | clean val accuracy |",
             "|---|---|---|"]
    lines += [f"| {100 * p['noise']:g}% | {p['n_noisy']} / {p['n_train']} | {100 * p['clean_val_accuracy']:.2f} |"
              for p in pre]
    lines += ["", "## Raw feature spectra (row-L2)", "", "| noise | data set | split | SVE | LSVR |",
              "|---|---|---|---|---|"]
    lines += [f"| {100 * s['noise']:g}% | {s['dataset']} | {s['split']} | {s['sve']:.3f} | {s['lsvr']:.3f} |"
              for s in spectra]
    lines += ["", "![SVE and LSVR vs noise](spectrum_vs_noise.png)", ""]
    md.write_text(md.read_text() + "\n".join(lines))
