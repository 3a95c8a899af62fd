"""The CLI through CliRunner, and once as a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from featstore_cli.main import COMMANDS, cli

from helpers import tiny_extract_args


def test_help_lists_every_command(runner):
    res = runner.invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in COMMANDS:
        assert name in res.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(runner, name):
    res = runner.invoke(cli, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output and f"featstore {name}" in res.output


def test_help_does_not_import_torch():
    code = ("import sys; from featstore_cli.main import cli\n"
            "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'zarr' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"


def test_extract_ls_info_verify_rm(runner, tiny_npz, tmp_path):
    root = tmp_path / "root"
    res = runner.invoke(cli, tiny_extract_args(tiny_npz, root, "--json"))
    assert res.exit_code == 0, res.output
    [result] = json.loads(res.output)
    assert result["cached"] is False and result["shape"][0] == 150
    key = result["key"]

    res = runner.invoke(cli, tiny_extract_args(tiny_npz, root))
    assert res.exit_code == 0 and res.output.startswith("cached")

    res = runner.invoke(cli, ["ls", str(root)])
    assert res.exit_code == 0 and key in res.output and "complete" in res.output
    listed = json.loads(runner.invoke(cli, ["ls", str(root), "--json"]).output)
    assert listed[0]["backbone"] == "timm:test_resnet" and listed[0]["n_samples"] == 150

    res = runner.invoke(cli, ["info", str(root / key[:8])])
    assert res.exit_code == 0 and "timm:test_resnet" in res.output and "complete" in res.output
    meta = json.loads(runner.invoke(cli, ["info", str(root / key[:8]), "--json"]).output)["metadata"]
    assert meta["key"] == key and meta["dataset"]["fingerprint"]

    res = runner.invoke(cli, ["verify", str(root / key[:8])])
    assert res.exit_code == 0 and res.output.startswith("OK")
    # change one stored byte: verify must fail and say which chunk
    arr = zarr.open_array(str(root / f"{key}.zarr" / "features"), mode="r+")
    arr[40, 1] = float(arr[40, 1]) + 1.0
    res = runner.invoke(cli, ["verify", str(root / key[:8])])
    assert res.exit_code == 1 and "FAILED" in res.output and "[1]" in res.output

    res = runner.invoke(cli, ["rm", str(root / key[:8]), "--yes"])
    assert res.exit_code == 0 and not (root / f"{key}.zarr").exists()


def test_extract_from_yaml_config(runner, tiny_npz, tmp_path):
    cfg = tmp_path / "jobs.yaml"
    cfg.write_text(f"""
backbones: [timm:test_resnet]
datasets: [{tiny_npz}]
root: {tmp_path / 'r'}
pretrained: false
image_size: 32
chunk_rows: 64
num_workers: 0
format: hdf5
""")
    res = runner.invoke(cli, ["extract", "--config", str(cfg), "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["path"].endswith(".h5")
    cfg.write_text("backbones: [x]\ndatasets: [y]\nbatchsize: 3\n")
    res = runner.invoke(cli, ["extract", "--config", str(cfg)])
    assert res.exit_code == 1 and "Unknown keys ['batchsize']" in res.output


@pytest.mark.parametrize("args, message", [
    (["--backbone", "timm:resnet5O"], "Did you mean: resnet50"),
    (["--backbone", "efficientnet-lite"], "Did you mean efficientnet-lite0"),
    (["--dataset", "no/such/thing.csv"], ""),
    (["--batch-size", "0"], "The 'batch_size' option of extract must be an int in [1, 65536]"),
    (["--views", "2"], "needs --augment train"),
])
def test_bad_input_clear_message_no_traceback(runner, tiny_npz, tmp_path, args, message):
    base = {"--backbone": "timm:test_resnet", "--dataset": str(tiny_npz)}
    for i in range(0, len(args) - 1, 2):
        base[args[i]] = args[i + 1]
    flat = ["extract", "--random-weights", "--root", str(tmp_path / "r"), "--workers", "0"]
    for k, v in base.items():
        flat += [k, v]
    res = runner.invoke(cli, flat)
    assert res.exit_code != 0
    assert "Traceback" not in res.output
    assert res.output.startswith("Error:") and message in res.output


def test_incomplete_store_is_explained(runner, tiny_npz, tmp_path):
    root = tmp_path / "root"
    res = runner.invoke(cli, tiny_extract_args(tiny_npz, root, "--json"))
    key = json.loads(res.output)[0]["key"]
    g = zarr.open_group(str(root / f"{key}.zarr"), mode="r+")
    g.attrs["featstore"] = {**g.attrs["featstore"], "complete": False}
    res = runner.invoke(cli, ["ls", str(root)])
    assert "INCOMPLETE" in res.output
    res = runner.invoke(cli, ["verify", str(root / key)])
    assert res.exit_code == 1 and "not marked complete" in res.output
    # rerunning the extract command completes it without recomputing any chunk
    res = runner.invoke(cli, tiny_extract_args(tiny_npz, root, "--json"))
    assert json.loads(res.output)[0]["resumed_chunks"] == 5


def test_real_subprocess(tiny_npz, tmp_path):
    exe = shutil.which("featstore", path=str(Path(sys.executable).parent))
    assert exe, "the console script is installed"
    out = subprocess.run([exe, *tiny_extract_args(tiny_npz, tmp_path / "r")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("extracted")
    bad = subprocess.run([exe, "info", str(tmp_path / "r" / "nope")], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "featstore ls" in bad.stderr


def test_corrupt_image_recorded_or_strict(runner, tiny_folder, tmp_path):
    res = runner.invoke(cli, tiny_extract_args(tiny_folder, tmp_path / "r", "--json"))
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index("["):])
    assert out[0]["n_invalid"] == 1 and out[0]["invalid"][0]["sample_id"] == "class0/broken.png"
    res = runner.invoke(cli, tiny_extract_args(tiny_folder, tmp_path / "s", "--strict"))
    assert res.exit_code == 1 and "class0/broken.png" in res.output and "--strict" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("content, args, message", [
    ("review,label\ngood,1\n", ["--text-column", "body"], "its columns are ['review', 'label']"),
    ('{"text": "a", "label": 1}\n{"text": "b", "label": [1]}\n', [], "labels mix types"),
])
def test_bad_manifest(runner, tmp_path, content, args, message):
    path = tmp_path / ("m.jsonl" if content.startswith("{") else "m.csv")
    path.write_text(content)
    res = runner.invoke(cli, ["extract", "--backbone", "all-minilm-l6-v2", "--dataset", str(path),
                              "--root", str(tmp_path / "r"), *args])
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output


def test_modality_mismatch(runner, tiny_npz, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("text,label\nhello,1\nbye,0\n")
    res = runner.invoke(cli, tiny_extract_args(path, tmp_path / "r"))
    assert res.exit_code == 1 and "reads images but data set" in res.output


def test_plugin_backbone(runner, tmp_path, monkeypatch):
    plugin = tmp_path / "my_plugin.py"
    plugin.write_text('''
import torch
from featstore.backbones import Backbone

class CharCounts(Backbone):
    id, modality, num_features = "plugin:charcounts", "text", 4
    def provenance(self):
        return {"id": self.id, "weights_sha256": None, "layer": "counts", "pooling": "none",
                "preprocessing": {}}
    def encode(self, batch):
        return torch.tensor([[len(t), t.count("a"), t.count("e"), t.count(" ")] for t in batch],
                            dtype=torch.float32)

def make(**options):
    return CharCounts()

def wrong(**options):
    return 42
''')
    monkeypatch.syspath_prepend(str(tmp_path))
    data = tmp_path / "t.csv"
    data.write_text("text,label\nbanana bread,1\nplain,0\n")
    res = runner.invoke(cli, ["extract", "--backbone", "my_plugin:make", "--dataset", str(data),
                              "--root", str(tmp_path / "r"), "--json"])
    assert res.exit_code == 0, res.output
    from featstore.store import open_store

    with open_store(json.loads(res.output)[0]["path"]) as fs:
        assert fs.load_features().tolist() == [[12, 4, 1, 1], [5, 1, 0, 0]]
    res = runner.invoke(cli, ["extract", "--backbone", "my_plugin:wrong", "--dataset", str(data),
                              "--root", str(tmp_path / "r")])
    assert res.exit_code == 1 and "must return" in res.output
