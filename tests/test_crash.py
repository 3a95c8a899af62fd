"""kill -9 at seeded moments of extract, copy, unpack and pretrain; rerun; compare bytes.

Each case runs the real command as a process, kills its process group at one point,
checks that nothing reads as complete but wrong, reruns the same command and compares the
result with a clean run's (tests/crash_harness.py, docs/crash-testing.md). The normal
suite tries 3 points per operation; `pytest -m stress tests/test_crash.py` tries 20.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import crash_harness as ch
from helpers import make_images, tiny_extract_args

OPERATIONS = ("extract", "copy", "unpack", "pretrain")
NORMAL_POINTS, STRESS_POINTS = 3, 20
PRETRAIN_EPOCHS = 5


class Lab:
    """The inputs, operations and clean runs, made once per module and only when asked."""

    def __init__(self, base: Path):
        self.base = base
        self.refs: dict[str, ch.Reference] = {}
        images, labels = make_images(960, size=16)  # 20 chunks of 48 rows
        np.savez(base / "images.npz", x=images, y=labels)
        images, labels = make_images(400, size=16, seed=1)  # 5 epochs of 22 batches
        np.savez(base / "pretrain.npz", x=images, y=labels)

    def op(self, name: str) -> ch.Operation:
        base = self.base
        if name == "extract":
            return ch.root_operation(
                "extract", lambda root: tiny_extract_args(
                    base / "images.npz", root, "--chunk-rows", "48", "--device", "cpu"),
                volatile=ch.EXTRACT_VOLATILE, poll_seconds=0.005)
        if name == "copy":  # the clean extraction's root is the source
            src = self.reference("extract").target
            return ch.root_operation(
                "copy", lambda dst: ["copy", str(src), str(dst), "--no-progress"],
                poll_seconds=0.0005)
        if name == "unpack":
            pack = self.pack_file()
            return ch.root_operation("unpack", lambda root: ["unpack", str(pack), str(root)],
                                     poll_seconds=0.0005)
        assert name == "pretrain"
        return ch.pretrain_operation(
            lambda out: ["pretrain", "--dataset", str(base / "pretrain.npz"), "--out", str(out),
                         "--epochs", str(PRETRAIN_EPOCHS), "--batch-size", "16",
                         "--image-size", "16", "--noise", "0.2", "--device", "cpu"],
            epochs=PRETRAIN_EPOCHS)

    def reference(self, name: str) -> ch.Reference:
        if name not in self.refs:
            op, target = self.op(name), self.base / f"clean-{name}"
            self.refs[name] = (ch.clean_run(op, target) if name == "pretrain"
                               else ch.root_reference(op, target))
        return self.refs[name]

    def pack_file(self) -> Path:
        from click.testing import CliRunner

        from featstore_cli.main import cli

        out = self.base / "sets.zip"
        if not out.exists():
            res = CliRunner().invoke(cli, ["pack", str(self.reference("extract").target),
                                           str(out)])
            assert res.exit_code == 0, res.output
        return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    return Lab(tmp_path_factory.mktemp("crash"))


def _cases(n: int) -> list:
    return [pytest.param(op, i, id=f"{op}-{i}") for op in OPERATIONS for i in range(n)]


def _crash(lab: Lab, name: str, i: int, n: int, tmp_path: Path) -> None:
    ref = lab.reference(name)
    point = ch.plan(name, ref, n)[i]
    ch.crash_and_resume(lab.op(name), ref, point, tmp_path / "target")  # asserts all


@pytest.mark.slow
@pytest.mark.parametrize("name, i", _cases(NORMAL_POINTS))
def test_kill_9_then_rerun_gives_the_clean_result(lab, name, i, tmp_path):
    _crash(lab, name, i, NORMAL_POINTS, tmp_path)


@pytest.mark.stress
@pytest.mark.parametrize("name, i", _cases(STRESS_POINTS))
def test_kill_9_stress(lab, name, i, tmp_path):
    _crash(lab, name, i, STRESS_POINTS, tmp_path)


# -- the harness itself can fail -------------------------------------------------------
@pytest.mark.slow
def test_a_complete_but_wrong_set_is_caught(lab, tmp_path):
    """One changed chunk byte in a set marked complete fails the check after a kill."""
    ref = lab.reference("extract")
    copy = tmp_path / "root"
    shutil.copytree(ref.target, copy)
    assert ch.root_state(copy, ref) == "complete"
    [name] = ch.reference_sets(ref)
    chunk = next(p for p in sorted((copy / name / "labels" / "c").rglob("*")) if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 1
    chunk.write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="shows it complete, but its files differ"):
        ch.root_state(copy, ref)
    assert ch.tree(copy, ref.extra["normalise"]) != ref.tree  # the final comparison, too


def test_tree_normalises_only_time_fields(tmp_path):
    """Group metadata may differ in its time fields, in nothing else."""
    norm = ch.json_normaliser(r"[^/]+\.zarr/zarr\.json", ch.EXTRACT_VOLATILE)
    meta = {"attributes": {"featstore": {"created_at": "t1", "n_samples": 4,
                                         "extraction": {"seconds": 1.5, "resumed_chunks": 0}}}}
    a, b = tmp_path / "a" / "K.zarr", tmp_path / "b" / "K.zarr"
    for folder, created, seconds, n in ((a, "t1", 1.5, 4), (b, "t2", 9.0, 4)):
        folder.mkdir(parents=True)
        meta["attributes"]["featstore"].update(created_at=created, n_samples=n)
        meta["attributes"]["featstore"]["extraction"]["seconds"] = seconds
        (folder / "zarr.json").write_text(ch.json.dumps(meta))
    assert ch.tree(a.parent, norm) == ch.tree(b.parent, norm)
    meta["attributes"]["featstore"]["n_samples"] = 5
    (b / "zarr.json").write_text(ch.json.dumps(meta))
    assert "changed (1): ['K.zarr/zarr.json']" in ch.tree_diff(ch.tree(a.parent, norm),
                                                              ch.tree(b.parent, norm))


@pytest.mark.slow
def test_wrong_weights_are_caught(lab, tmp_path):
    """Weights that differ from the clean run's fail the check, finished or not."""
    ref = lab.reference("pretrain")
    out = tmp_path / "w"
    shutil.copytree(ref.target, out)
    assert ch.pretrain_state(out, ref) == "complete"
    data = bytearray((out / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (out / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(AssertionError, match="model.safetensors differs"):
        ch.pretrain_state(out, ref)
    (out / "model.json").unlink()  # unfinished: the weights are still checked
    with pytest.raises(AssertionError, match="model.safetensors differs"):
        ch.pretrain_state(out, ref)
