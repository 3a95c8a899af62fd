"""`featstore pretrain`: determinism, kill -9 and resume, the model card and its checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from featstore.errors import BackboneError, ConfigError, DataError
from featstore.workflows.pretrain import PretrainConfig, pretrain
from featstore_cli.main import cli

from helpers import make_images, tiny_extract_args


@pytest.fixture
def pt_data(tmp_path: Path) -> Path:
    images, labels = make_images(120, size=16, classes=3)
    path = tmp_path / "pt.npz"
    np.savez(path, x=images, y=labels)
    return path


def _cfg(data: Path, out: Path, **kw) -> PretrainConfig:
    base = dict(model="timm:test_resnet", dataset=str(data), out=str(out), epochs=2,
                batch_size=16, image_size=16, device="cpu", noise=0.2, num_threads=1)
    return PretrainConfig(**{**base, **kw})


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


CHILD = """
import sys
from featstore.workflows.pretrain import PretrainConfig, pretrain
cfg = PretrainConfig(model="timm:test_resnet", dataset=sys.argv[1], out=sys.argv[2], epochs=2,
                     batch_size=16, image_size=16, device="cpu", noise=0.2, num_threads=1)
pretrain(cfg, on_batch=lambda e, b, loss: print(f"batch {e} {b}", flush=True))
print("finished", flush=True)
"""


def _run_and_kill(data: Path, out: Path, at: str) -> int:
    """Run CHILD as a real process and SIGKILL it when it reports batch ``at``."""
    with subprocess.Popen([sys.executable, "-c", CHILD, str(data), str(out)],
                          stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent) as proc:
        for line in proc.stdout:
            if line.startswith(f"batch {at}"):
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait()
    return proc.returncode


def test_killed_pretraining_resumes_to_the_same_weights(pt_data, tmp_path):
    ref = pretrain(_cfg(pt_data, tmp_path / "ref"))
    assert ref["noise"]["n_noisy"] == round(0.2 * ref["dataset"]["n_train"])
    assert 0 <= ref["clean_val_accuracy"] <= 1 and len(ref["history"]) == 2
    out = tmp_path / "killed"
    assert _run_and_kill(pt_data, out, "1 2") == -signal.SIGKILL  # mid-way through epoch 2
    assert (out / "checkpoint.safetensors").exists() and not (out / "model.json").exists()
    messages = []
    card = pretrain(_cfg(pt_data, out), echo=messages.append)
    assert any("resuming" in m and "after epoch 1" in m for m in messages)
    a, b = _tensors(tmp_path / "ref" / "model.safetensors"), _tensors(out / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
    assert card["weights_sha256"] == ref["weights_sha256"]
    assert not (out / "checkpoint.safetensors").exists()
    # a finished run with the same options is a cache hit
    again = []
    pretrain(_cfg(pt_data, out), echo=again.append)
    assert again and again[0].startswith("cached")


def test_resume_with_other_options_is_refused(pt_data, tmp_path):
    out = tmp_path / "w"
    assert _run_and_kill(pt_data, out, "1 0") == -signal.SIGKILL
    before = (out / "checkpoint.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="lr: 0.01 there vs 0.05 now.*--restart"):
        pretrain(_cfg(pt_data, out, lr=0.05))
    assert (out / "checkpoint.safetensors").read_bytes() == before
    pretrain(_cfg(pt_data, out, lr=0.05), restart=True)
    assert json.loads((out / "model.json").read_text())["options"]["lr"] == 0.05


def test_model_card_reaches_the_feature_set(runner, pt_data, tmp_path):
    pretrain(_cfg(pt_data, tmp_path / "w", noise=0.3))
    weights = tmp_path / "w" / "model.safetensors"
    images, labels = make_images(40, size=16, classes=3, seed=5)
    np.savez(tmp_path / "down.npz", x=images, y=labels)
    args = tiny_extract_args(tmp_path / "down.npz", tmp_path / "root", "--json")
    args = [a for a in args if a not in ("--random-weights",)]
    args[args.index("--image-size"):args.index("--image-size") + 2] = []  # from the card
    res = runner.invoke(cli, args + ["--weights", str(weights)])
    assert res.exit_code == 0, res.output
    from featstore.store import open_store

    with open_store(json.loads(res.output)[0]["path"]) as fs:
        bb = fs.metadata["backbone"]
        assert bb["model_card"]["noise"]["ratio"] == 0.3
        assert bb["preprocessing"]["input_size"] == [3, 16, 16]
    # weights whose card names another architecture
    bad = [a if a != "timm:test_resnet" else "timm:resnet10t" for a in args]
    res = runner.invoke(cli, bad + ["--weights", str(weights)])
    assert res.exit_code == 1 and "was trained as timm:test_resnet" in res.output
    assert "Traceback" not in res.output


@pytest.mark.parametrize("kw, error, message", [
    ({"noise": 1.0}, ConfigError, "must be a float in [0, 1)"),
    ({"noise": -0.1}, ConfigError, "must be a float in [0, 1)"),
    ({"model": "resnet10t"}, ConfigError, "--model timm:NAME"),
    ({"epochs": 0}, ConfigError, "'epochs' option of pretrain must be an int in [1, inf)"),
])
def test_bad_options(pt_data, tmp_path, kw, error, message):
    with pytest.raises(error) as err:
        pretrain(_cfg(pt_data, tmp_path / "x", **kw))
    assert message in str(err.value)
    assert not (tmp_path / "x").exists()


def test_one_class_data_refused(tmp_path):
    images, _ = make_images(30, size=16)
    np.savez(tmp_path / "one.npz", x=images, y=np.zeros(30, int))
    with pytest.raises(DataError, match="one class"):
        pretrain(_cfg(tmp_path / "one.npz", tmp_path / "x"))


def test_card_architecture_mismatch_in_python(pt_data, tmp_path):
    from featstore.backbones.timm_backbone import TimmBackbone

    pretrain(_cfg(pt_data, tmp_path / "w", epochs=1))
    with pytest.raises(BackboneError, match="Use --backbone timm:test_resnet"):
        TimmBackbone("resnet10t", weights=tmp_path / "w" / "model.safetensors")
    bb = TimmBackbone("test_resnet", weights=tmp_path / "w" / "model.safetensors")
    assert bb.provenance()["model_card"]["noise"]["ratio"] == 0.2
    # other weights beside this card: the card's provenance would be wrong
    pretrain(_cfg(pt_data, tmp_path / "v", epochs=1, seed=1))
    (tmp_path / "w" / "model.safetensors").write_bytes((tmp_path / "v" / "model.safetensors").read_bytes())
    with pytest.raises(BackboneError, match="does not match its model card"):
        TimmBackbone("test_resnet", weights=tmp_path / "w" / "model.safetensors")


def test_empty_validation_split_refused(pt_data, tmp_path):
    with pytest.raises(DataError, match="leaves 0 for the clean validation split"):
        pretrain(_cfg(pt_data, tmp_path / "x", val_fraction=0.001))


def test_pretrain_cli_bad_input(runner, pt_data, tmp_path):
    base = ["pretrain", "--dataset", str(pt_data), "--image-size", "16", "--epochs", "1",
            "--batch-size", "16", "--device", "cpu"]
    res = runner.invoke(cli, base + ["--noise", "1.0", "--out", str(tmp_path / "a")])
    assert res.exit_code == 1 and "must be a float in [0, 1)" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "a").exists()
    res = runner.invoke(cli, base + ["--out", str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0, res.output
    card = json.loads(res.output)
    assert card["format"] == "featstore-model-card/1" and card["epochs"] == 1
    before = (tmp_path / "b" / "model.safetensors").read_bytes()
    res = runner.invoke(cli, base + ["--out", str(tmp_path / "b"), "--lr", "0.05"])
    assert res.exit_code == 1 and "other options (lr: 0.01 there vs 0.05 now)" in res.output
    assert (tmp_path / "b" / "model.safetensors").read_bytes() == before
