"""`featstore tune --grid ... --select-on val`: selection on a validation split only,
every point's score recorded; grid sweeps and the report of selected configurations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featstore_cli.main import cli

from helpers import assert_user_error, make_images, tiny_extract_args

GRID = ["--grid", "lr=0.00001,0.1", "--grid", "weight_decay=0,0.001"]


@pytest.fixture
def stores(runner, tmp_path):
    """train, test, a test store of the same images with shuffled labels ("poisoned"),
    and a validation store."""
    out = {}
    images, labels = make_images(120, seed=0)
    shuffled = np.random.default_rng(5).permutation(labels)
    for name, seed, y in (("train", 0, labels), ("test", 1, labels), ("poisoned", 1, shuffled),
                          ("val", 2, labels)):
        noise = np.random.default_rng(seed).integers(0, 20, images.shape)
        np.savez(tmp_path / f"{name}.npz", x=np.clip(images + noise, 0, 255).astype(np.uint8), y=y)
        res = runner.invoke(cli, tiny_extract_args(tmp_path / f"{name}.npz", tmp_path / "r", "--json"))
        assert res.exit_code == 0, res.output
        out[name] = json.loads(res.output)[0]["path"]
    return out


def _tune(runner, stores, *extra, test="test"):
    res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores[test],
                              "--method", "lp", "--epochs", "10", "--batch-size", "16", "--device", "cpu",
                              *extra])
    assert res.exit_code == 0, res.output
    return res


def test_select_on_val_records_every_point_and_reports_the_choice(runner, stores, tmp_path):
    results = tmp_path / "r.jsonl"
    res = _tune(runner, stores, *GRID, "--select-on", "val", "--seeds", "2",
                "--results", str(results))
    assert "chosen on validation accuracy" in res.output and "(id)" in res.output
    [rec] = [json.loads(x) for x in results.read_text().splitlines()]
    sel = rec["selection"]
    assert sel["on"] == "val" and sel["metric"] == "accuracy"
    assert sel["val"]["source"] == "carved from train" and sel["val"]["fraction"] == 0.2
    assert len(sel["points"]) == 4 and rec["grid"] == {"lr": [0.00001, 0.1],
                                                       "weight_decay": [0, 0.001]}
    means = [p["val"]["mean"] for p in sel["points"]]
    assert sel["chosen_index"] == int(np.argmax(means))  # ties: the first
    assert sel["points"][sel["chosen_index"]]["params"] == sel["chosen"]
    assert set(sel["chosen"]) == {"lr", "weight_decay"}  # the grid's names only
    assert rec["params"] == {"epochs": 10, "batch_size": 16, "device": "cpu", **sel["chosen"]}
    assert means[0] < max(means)  # lr 1e-5 is worse: the choice is not arbitrary
    assert [r["seed"] for r in rec["runs"]] == [0, 1]
    for run in rec["runs"]:
        assert run["params"]["lr"] == sel["chosen"]["lr"]
        assert set(run["scores"]) == {next(iter(rec["summary"]))}  # only test evaluated
    assert rec["n_train"] == 120 - sel["val"]["n"] and sel["val"]["n"] == 24


def test_the_test_set_never_takes_part_in_the_choice(runner, stores):
    """Shuffling the test labels changes test accuracy, not a single validation score."""
    args = (*GRID, "--select-on", "val", "--seeds", "1", "--json")
    clean = json.loads(_tune(runner, stores, *args).output)
    poisoned = json.loads(_tune(runner, stores, *args, test="poisoned").output)
    assert clean["selection"] == poisoned["selection"]
    acc = [next(iter(r["summary"].values()))["accuracy"]["mean"] for r in (clean, poisoned)]
    assert acc[0] > 0.9 and acc[1] < 0.7


def test_validation_store_and_shared_data_order(runner, stores):
    rec = json.loads(_tune(runner, stores, "--grid", "lr=0.01,0.05", "--select-on", "val",
                           "--val", stores["val"], "--data-seed", "3", "--seeds", "2",
                           "--select-metric", "macro_f1", "--json").output)
    sel = rec["selection"]
    assert sel["val"]["source"] == "store" and sel["val"]["n"] == 120 and sel["data_seed"] == 3
    assert rec["n_train"] == 120 and sel["metric"] == "macro_f1"
    assert set(sel["points"][0]["val"]["per_seed"]) == {"0", "1"}


def test_select_streams_a_carved_split(runner, stores):
    rec = json.loads(_tune(runner, stores, "--grid", "lr=0.01,0.05", "--select-on", "val",
                           "--stream", "always", "--seeds", "1", "--json").output)
    assert rec["runs"][0]["streamed"] and rec["n_train"] == 96


@pytest.mark.parametrize("extra, needles", [
    (["--grid", "lr=0.01,0.1"], ["--grid", "--select-on val"]),
    (["--val", "x"], ["--val", "--select-on val"]),
    (["--grid", "lr", "--select-on", "val"], ["NAME=V1,V2"]),
    (["--grid", "hidden=3", "--select-on", "val"], ["no parameter 'hidden'"]),
    (["--grid", "lr=0.1,-1", "--select-on", "val"], ["'lr' parameter"]),
    (["--grid", "train_noise=0.1", "--select-on", "val"], ["cannot vary"]),
    (["--select-on", "val", "--val-fraction", "1.5"], ["val_fraction"]),
    (["--select-on", "val", "--select-metric", "auc"], ["select_metric", "accuracy"]),
])
def test_bad_selection_options(runner, stores, tmp_path, extra, needles):
    results = tmp_path / "r.jsonl"
    res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                              "--method", "lp", "--results", str(results), *extra])
    assert_user_error(res, *needles)
    assert not results.exists()


def test_grid_sweep_selects_and_report_shows_it(runner, stores, tmp_path):
    results = tmp_path / "sweep.jsonl"
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"""
results: {results}
jobs:
  - {{train: {stores['train']}, test: {stores['test']}}}
methods: [lp, mlp]
seeds: 2
params: {{epochs: 3, device: cpu}}
grid:
  lp: {{lr: [0.0001, 0.05]}}
  mlp: {{weight_decay: [0.0, 0.01]}}
select_on: val
select_metric: accuracy
workers: 1
""")
    res = runner.invoke(cli, ["sweep", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "2 runs done" in res.output  # one selected run per (job, method)
    recs = [json.loads(x) for x in results.read_text().splitlines()]
    assert {r["method"] for r in recs} == {"lp", "mlp"}
    assert all(len(r["selection"]["points"]) == 2 and len(r["runs"]) == 2 for r in recs)
    res = runner.invoke(cli, ["sweep", str(cfg), "--json"])
    assert json.loads(res.output)["skipped"] == 2
    res = runner.invoke(cli, ["report", str(results), "--out", str(tmp_path / "rep"), "--grid"])
    assert res.exit_code == 0, res.output
    assert "selected on val" in res.output and '"lr": 0.05' in res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Selected configurations" in md and "## Every grid point" in md
    assert md.count("| lp ") + md.count("| mlp ") >= 4  # the whole grid listed


def test_sweep_select_on_is_checked(runner, stores, tmp_path):
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"results: {tmp_path / 's.jsonl'}\njobs:\n  - {{train: {stores['train']}, "
                   f"test: {stores['test']}}}\nmethods: [lp]\nselect_on: test\n")
    res = runner.invoke(cli, ["sweep", str(cfg)])
    assert_user_error(res, "select_on")


def test_a_val_store_that_is_the_test_or_an_ood_store_is_refused(runner, stores):
    for where in (["--val", stores["test"]], ["--val", stores["poisoned"], "--ood",
                                                stores["poisoned"]]):
        res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                                  "--method", "lp", "--epochs", "2", "--device", "cpu", *GRID,
                                  "--select-on", "val", *where])
        assert_user_error(res, "--val", "separate validation store")


def test_a_nan_validation_score_never_wins_the_selection():
    from featstore.errors import DataError
    from featstore.workflows.selection import choose

    nan = float("nan")
    assert choose([{0: nan}, {0: 0.9}, {0: 0.5}], "pearson") == 1
    assert choose([{0: 0.2, 1: nan}, {0: 0.1, 1: 0.1}], "accuracy") == 1
    assert choose([{0: nan}, {0: 3.0}, {0: 2.0}], "mse") == 2  # lowest mse wins
    with pytest.raises(DataError, match="undefined"):
        choose([{0: nan}, {0: nan}], "pearson")
