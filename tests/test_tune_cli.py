"""`featstore tune` end to end on tiny stores, and its bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from featstore_cli.main import cli

from helpers import make_images, tiny_extract_args


@pytest.fixture
def stores(runner, tmp_path):
    out = {}
    for name, seed in (("train", 0), ("test", 1)):
        images, labels = make_images(96, seed=0)
        noise = np.random.default_rng(seed).integers(0, 20, images.shape)
        np.savez(tmp_path / f"{name}.npz", x=np.clip(images + noise, 0, 255).astype(np.uint8), y=labels)
        res = runner.invoke(cli, tiny_extract_args(tmp_path / f"{name}.npz", tmp_path / "r", "--json"))
        assert res.exit_code == 0, res.output
        out[name] = json.loads(res.output)[0]["path"]
    np.savez(tmp_path / "nolabels.npz", x=make_images(40)[0])
    res = runner.invoke(cli, tiny_extract_args(tmp_path / "nolabels.npz", tmp_path / "r", "--json"))
    out["nolabels"] = json.loads(res.output)[0]["path"]
    res = runner.invoke(cli, tiny_extract_args(tmp_path / "train.npz", tmp_path / "r", "--json")
                        + ["--image-size", "48"])
    out["other_backbone"] = json.loads(res.output)[0]["path"]
    images, labels = make_images(40, classes=5)
    np.savez(tmp_path / "five.npz", x=images, y=labels)
    res = runner.invoke(cli, tiny_extract_args(tmp_path / "five.npz", tmp_path / "r", "--json"))
    out["other_labels"] = json.loads(res.output)[0]["path"]
    return out


@pytest.mark.parametrize("method", ["lp", "mlp", "nmtune", "logreg"])
def test_tune_end_to_end(runner, stores, tmp_path, method):
    results = tmp_path / "results.jsonl"
    args = ["tune", "--train", stores["train"], "--test", stores["test"], "--ood", stores["test"],
            "--method", method, "--seeds", "2", "--results", str(results)]
    if method != "logreg":
        args += ["--epochs", "5", "--device", "cpu"]
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and "(id)" in res.output and "(ood)" in res.output
    [record] = [json.loads(line) for line in results.read_text().splitlines()]
    assert record["method"] == method and len(record["runs"]) == 2
    assert record["summary"]
    assert all(0 <= r["scores"][k]["accuracy"] <= 1 for r in record["runs"] for k in r["scores"])


@pytest.mark.parametrize("which, message", [
    ("nolabels", "has no labels"),
    ("other_backbone", "another backbone"),
    ("other_labels", "never has"),
])
def test_tune_bad_input_appends_nothing(runner, stores, tmp_path, which, message):
    results = tmp_path / "results.jsonl"
    train, test = (stores[which], stores["test"]) if which == "nolabels" else (stores["train"], stores[which])
    res = runner.invoke(cli, ["tune", "--train", train, "--test", test, "--method", "lp",
                              "--results", str(results)])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not results.exists()


def _synthetic_store(path, X, valid):
    from featstore.store import create_store, schema

    n, d = X.shape
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": path.stem * 6, "complete": False,
            "n_samples": n, "n_features": d, "n_views": 1, "dtype": "float32", "chunk_rows": 16,
            "backbone": {"id": "synthetic"},
            "dataset": {"name": path.stem, "split": "train", "classes": None, "task": "classification"}}
    st = create_store(path, metadata=meta, n_features=d, n_views=1, dtype="float32", chunk_rows=16,
                      sample_ids=[str(i) for i in range(n)], labels=np.arange(n) % 2, codec="zstd")
    for c in range(schema.n_chunks(n, 16)):
        s, e = schema.chunk_bounds(c, n, 16)
        st.write_chunk(c, X[s:e], valid[s:e])
    st.mark_complete()
    st.close()
    return str(path)


@pytest.mark.parametrize("stream", ["never", "always"])
@pytest.mark.parametrize("case, message", [
    ("nan", "contain NaN or inf"),
    ("inf", "contain NaN or inf"),
    ("empty", "has no valid samples"),
])
def test_tune_bad_features_append_nothing(runner, tmp_path, case, message, stream):
    """NaN/inf features, or a split where no sample loaded: a clear error, exit 1,
    nothing appended; the same whether the features are loaded or streamed."""
    X = np.random.default_rng(0).normal(size=(40, 6)).astype(np.float32)
    valid = np.ones(40, bool)
    if case in ("nan", "inf"):
        X[21, 2] = np.nan if case == "nan" else np.inf
    else:
        valid[:] = False
    bad = _synthetic_store(tmp_path / "bad.zarr", X, valid)
    good = _synthetic_store(tmp_path / "good.zarr", np.nan_to_num(X, posinf=0), np.ones(40, bool))
    results = tmp_path / "results.jsonl"
    res = runner.invoke(cli, ["tune", "--train", bad, "--test", good, "--method", "mlp",
                              "--epochs", "1", "--stream", stream, "--results", str(results)])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not results.exists()


def test_tune_streamed_end_to_end(runner, stores, tmp_path):
    """--stream always trains from the store chunk by chunk and reports like in memory."""
    out = {}
    for stream in ("never", "always"):
        res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                                  "--method", "mlp", "--seeds", "1", "--epochs", "20", "--batch-size", "16",
                                  "--device", "cpu", "--stream", stream, "--json"])
        assert res.exit_code == 0, res.output
        out[stream] = json.loads(res.output)
    [acc_mem] = [s["accuracy"]["mean"] for s in out["never"]["summary"].values()]
    [acc_stream] = [s["accuracy"]["mean"] for s in out["always"]["summary"].values()]
    assert acc_mem > 0.5 and acc_stream > 0.5  # 3 classes: chance is 1/3; quality vs memory
    # on separable data is checked in test_tuners.test_streamed_training_never_loads_the_store
    assert out["always"]["params"]["stream"] == "always"


def test_tune_bad_hyperparameter(runner, stores):
    res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                              "--method", "nmtune", "--lr", "-1"])
    assert res.exit_code == 1
    assert "The 'lr' parameter of NMTune must be a float in (0, inf). Got -1.0 instead." in res.output


def test_spectrum_cli(runner, stores, tmp_path):
    png = tmp_path / "s.png"
    res = runner.invoke(cli, ["spectrum", stores["train"], stores["test"], "--plot", str(png), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert len(out) == 2 and out[0]["preprocessing"] == "l2" and out[0]["sve"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with __import__("featstore").open_store(stores["train"]) as fs:
        X = fs.load_features(dtype=np.float64)[fs.valid]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    s = np.linalg.svd(X, compute_uv=False)
    p = s / s.sum()
    p = p[p > 0]
    assert abs(out[0]["sve"] - float(-(p * np.log(p)).sum())) < 1e-6


def test_report_from_results(runner, stores, tmp_path):
    results = tmp_path / "results.jsonl"
    for method in ("lp", "mlp"):
        res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                                  "--method", method, "--seeds", "2", "--epochs", "3",
                                  "--device", "cpu", "--results", str(results)])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["report", str(results), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert "| lp |" in res.output.replace("train | lp", "| lp") or " lp " in res.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "ID avg" in md and "methods.png" in md
    assert (tmp_path / "rep" / "methods.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "rep" / "spectrum_vs_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "SVE of the tuned features" in md
    assert "\\begin{tabular}" in (tmp_path / "rep" / "table.tex").read_text()
    assert len((tmp_path / "rep" / "table.csv").read_text().splitlines()) == 3
    res = runner.invoke(cli, ["report", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 1 and "featstore tune" in res.output


def test_saved_heads_eval_and_predict(runner, stores, tmp_path):
    heads = tmp_path / "heads"
    res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                              "--method", "mlp", "--seeds", "1", "--epochs", "3", "--device", "cpu",
                              "--save-heads", str(heads), "--json"])
    assert res.exit_code == 0, res.output
    tuned_acc = json.loads(res.output)["runs"][0]["scores"]
    res = runner.invoke(cli, ["eval", "--head", str(heads / "mlp-seed0"), stores["test"], "--json"])
    assert res.exit_code == 0, res.output
    [row] = json.loads(res.output)
    assert abs(row["accuracy"] - next(iter(tuned_acc.values()))["accuracy"]) < 1e-9
    out = tmp_path / "pred.csv"
    res = runner.invoke(cli, ["predict", "--head", str(heads / "mlp-seed0"), stores["test"], "--out", str(out)])
    assert res.exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("sample_id,prediction,p_0") and len(lines) == 97
    res = runner.invoke(cli, ["eval", "--head", str(heads / "mlp-seed0"), stores["other_backbone"]])
    assert res.exit_code == 1 and "another backbone" in res.output
    res = runner.invoke(cli, ["eval", "--head", str(heads / "nope"), stores["test"]])
    assert res.exit_code == 1 and "--save-heads" in res.output
    # the spectrum of the tuned features z equals the one tune recorded for this head
    res = runner.invoke(cli, ["spectrum", stores["test"], "--head", str(heads / "mlp-seed0"), "--json"])
    assert res.exit_code == 0, res.output
    [sp] = json.loads(res.output)
    assert abs(sp["sve"] - next(iter(tuned_acc.values()))["sve"]) < 1e-6 and "→ z of" in sp["name"]
    res = runner.invoke(cli, ["spectrum", stores["other_backbone"], "--head", str(heads / "mlp-seed0")])
    assert res.exit_code == 1 and "another backbone" in res.output


def test_sweep_runs_grid_and_resumes(runner, stores, tmp_path):
    results = tmp_path / "sweep.jsonl"
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(f"""
results: {results}
jobs:
  - {{train: {stores['train']}, test: {stores['test']}}}
methods: [lp, nmtune]
seeds: 2
params: {{epochs: 2, device: cpu}}
grid:
  nmtune: {{lambda_svd: [0.0, 0.01]}}
workers: 2
""")
    res = runner.invoke(cli, ["sweep", str(cfg)])
    assert res.exit_code == 0, res.output
    assert "6 runs done, 0 already" in res.output and "forward passes avoided" in res.output
    lines = results.read_text().splitlines()
    assert len(lines) == 6 and len({json.loads(x)["run_id"] for x in lines}) == 6
    res = runner.invoke(cli, ["sweep", str(cfg), "--json"])
    assert json.loads(res.output)["skipped"] == 6 and json.loads(res.output)["ran"] == 0
    assert len(results.read_text().splitlines()) == 6
    res = runner.invoke(cli, ["report", str(results), "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0 and '"lambda_svd": 0.01' in res.output
    cfg.write_text(f"results: {results}\njobs: []\nmethods: [lp]\nseed: 3\n")
    res = runner.invoke(cli, ["sweep", str(cfg)])
    assert res.exit_code == 1 and "Unknown keys ['seed']" in res.output
    assert len(results.read_text().splitlines()) == 6


def test_sweep_selects_stores_by_name(runner, stores, tmp_path):
    """Jobs may name stores by data set and split in the sweep's root; a selection that
    matches none or several is an error that lists what it matched."""
    from featstore.store import open_store

    with open_store(stores["test"]) as fs:
        test_name = fs.metadata["dataset"]["name"]
    with open_store(stores["train"]) as fs:
        train_name = fs.metadata["dataset"]["name"]
    results = tmp_path / "named.jsonl"
    cfg = tmp_path / "named.yaml"
    cfg.write_text(f"""
results: {results}
root: {tmp_path / 'r'}
jobs:
  - {{train: {stores['train']}, test: {{dataset: '{test_name}'}}}}
methods: [lp]
seeds: 1
params: {{epochs: 1, device: cpu}}
workers: 1
""")
    res = runner.invoke(cli, ["sweep", str(cfg), "--json"])
    assert res.exit_code == 0, res.output
    [rec] = [json.loads(x) for x in results.read_text().splitlines()]
    assert rec["summary"] and json.loads(res.output)["ran"] == 1
    for selection, message in [("{dataset: nowhere}", "matches 0 complete feature sets"),
                               (f"{{dataset: '{train_name}'}}", "matches 2 complete feature sets"),
                               ("{data: train}", "a mapping with keys dataset")]:
        cfg.write_text(f"results: {results}\nroot: {tmp_path / 'r'}\nmethods: [lp]\n"
                       f"jobs:\n  - {{train: {selection}, test: {stores['test']}}}\n")
        res = runner.invoke(cli, ["sweep", str(cfg)])
        assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert len(results.read_text().splitlines()) == 1


def test_tune_train_noise_recorded_and_plotted(runner, stores, tmp_path):
    """--train-noise corrupts exactly round(r·N) training labels per seed, is recorded
    with the run, and the report draws accuracy against the noise ratio."""
    results = tmp_path / "noise.jsonl"
    for extra in ([], ["--train-noise", "0.4"], ["--train-noise", "0.4", "--noise-kind", "symmetric-all"]):
        res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                                  "--method", "lp", "--seeds", "2", "--epochs", "3", "--device", "cpu",
                                  "--results", str(results), *extra])
        assert res.exit_code == 0, res.output
    recs = [json.loads(x) for x in results.read_text().splitlines()]
    assert [r["noise"]["train_noise"] for r in recs] == [0, 0.4, 0.4]
    assert [run["train_labels_noisy"] for run in recs[1]["runs"]] == [round(0.4 * 96)] * 2
    assert all(run["train_labels_noisy"] <= round(0.4 * 96) for run in recs[2]["runs"])
    assert "40% symmetric training-label noise" in res.output or "symmetric-all" in res.output
    res = runner.invoke(cli, ["report", str(results), "--out", str(tmp_path / "rep"), "--json"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "accuracy_vs_noise.png").stat().st_size > 10_000
    assert "40% downstream noise" in (tmp_path / "rep" / "report.md").read_text()
    res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                              "--method", "lp", "--noise-kind", "pairflip", "--results", str(results)])
    assert res.exit_code == 1 and "--noise-kind needs --train-noise" in res.output
    res = runner.invoke(cli, ["tune", "--train", stores["train"], "--test", stores["test"],
                              "--method", "lp", "--train-noise", "1.0", "--results", str(results)])
    assert res.exit_code == 1 and "must be a float in [0, 1)" in res.output
    assert len(results.read_text().splitlines()) == 3
