"""Extraction: cache hits, resume after kill -9, views, invalid samples, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from featstore.backbones import create_backbone
from featstore.data._base import ArraySampleSet
from featstore.errors import (ConfigError, DimensionMismatchError, SampleLoadError,
                              StoreIncompleteError)
from featstore.extract import ExtractConfig, extract_one
from featstore.store import Root, open_store

from helpers import fill_disk_at_chunk, make_images

CPU = torch.device("cpu")


def _samples(n=100, broken=()):
    images, labels = make_images(n)

    class Flaky(ArraySampleSet):
        def load(self, index):
            if index in broken:
                raise OSError(f"cannot decode sample {index}")
            return super().load(index)

    return Flaky(data=images, name="tiny", split="train", modality="image",
                 sample_ids=[f"s{i}" for i in range(n)], labels=labels, classes=["a", "b", "c"])


@pytest.fixture(scope="module")
def backbone():
    return create_backbone("timm:test_resnet", pretrained=False, image_size=32)


def _cfg(root, **kw):
    base = dict(backbones=["timm:test_resnet"], datasets=["tiny"], root=str(root), chunk_rows=32,
                batch_size=8, num_workers=0, pretrained=False, progress=False)
    return ExtractConfig(**{**base, **kw})


@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_extract_then_cache_hit(tmp_path, backbone, fmt):
    samples = _samples()
    first = extract_one(backbone, samples, _cfg(tmp_path, format=fmt), CPU)
    assert not first.cached and first.computed_chunks == 4 and first.shape == [100, backbone.num_features]
    with open_store(first.path) as fs:
        feats = fs.load_features()
        meta = fs.metadata
    # The stored features are the backbone's, row by row.
    x = torch.stack([backbone.transform()(samples.load(i)) for i in range(8)])
    np.testing.assert_allclose(feats[:8], backbone.encode(x).numpy(), rtol=2e-3, atol=2e-3)
    assert meta["backbone"]["weights_sha256"] == backbone.weights_sha256
    assert meta["dataset"]["fingerprint"] == samples.fingerprint()
    assert meta["complete"] is True and meta["extraction"]["device"] == "cpu"
    again = extract_one(backbone, samples, _cfg(tmp_path, format=fmt), CPU)
    assert again.cached and again.key == first.key and again.computed_chunks == 0
    forced = extract_one(backbone, samples, _cfg(tmp_path, format=fmt, force=True), CPU)
    assert not forced.cached and forced.computed_chunks == 4


def test_key_follows_content(tmp_path, backbone):
    a = extract_one(backbone, _samples(), _cfg(tmp_path), CPU)
    b = extract_one(backbone, _samples(), _cfg(tmp_path, dtype="float32"), CPU)
    other = create_backbone("timm:test_resnet", pretrained=False, image_size=32, seed=1)
    c = extract_one(other, _samples(), _cfg(tmp_path), CPU)
    changed = _samples()
    changed._data = changed._data.copy()
    changed._data[5, 0, 0] ^= 1
    d = extract_one(backbone, changed, _cfg(tmp_path), CPU)
    assert len({a.key, b.key, c.key, d.key}) == 4
    # batch size and chunking do not change what the features are
    e = extract_one(backbone, _samples(), _cfg(tmp_path / "other", batch_size=5), CPU)
    assert e.key == a.key


def test_invalid_samples_recorded_or_strict(tmp_path, backbone):
    res = extract_one(backbone, _samples(broken={3, 40}), _cfg(tmp_path), CPU)
    assert res.n_invalid == 2 and [i["sample_id"] for i in res.invalid] == ["s3", "s40"]
    assert "cannot decode" in res.invalid[0]["error"]
    with open_store(res.path) as fs:
        assert (~fs.valid).nonzero()[0].tolist() == [3, 40]
        assert not fs.load_features()[3].any()
    with pytest.raises(SampleLoadError, match="s3"):
        extract_one(backbone, _samples(broken={3}), _cfg(tmp_path / "strict", strict=True), CPU)
    # the failed strict run left nothing that reads as complete
    for entry in Root(tmp_path / "strict"):
        assert not entry.complete


def test_views_are_seeded_and_differ(tmp_path, backbone):
    cfg = _cfg(tmp_path, views=2, augment="train", seed=7)
    res = extract_one(backbone, _samples(40), cfg, CPU)
    with open_store(res.path) as fs:
        a = fs.load_features()
        assert fs.metadata["views"] == {"count": 2, "augment": "train", "seed": 7}
    assert a.shape == (40, 2, backbone.num_features)
    assert not np.allclose(a[:, 0], a[:, 1])  # the two views are different augmentations
    again = extract_one(backbone, _samples(40), _cfg(tmp_path / "b", views=2, augment="train", seed=7), CPU)
    with open_store(again.path) as fs:
        np.testing.assert_array_equal(fs.load_features(), a)  # same seed, same bytes


def test_dimension_mismatch_is_reported(tmp_path, backbone):
    class Liar(type(backbone)):
        def encode(self, batch):
            return super().encode(batch)[:, :10]

    liar = create_backbone("timm:test_resnet", pretrained=False, image_size=32)
    liar.__class__ = Liar
    with pytest.raises(DimensionMismatchError, match="10-d"):
        extract_one(liar, _samples(), _cfg(tmp_path), CPU)
    with pytest.raises(StoreIncompleteError):
        open_store(Root(tmp_path).path_for(next(iter(Root(tmp_path))).key))


def test_config_validation():
    with pytest.raises(ConfigError, match="The 'batch_size' option of extract must be an int"):
        ExtractConfig(backbones=["x"], datasets=["y"], batch_size=0)
    with pytest.raises(ConfigError, match="needs --augment train"):
        ExtractConfig(backbones=["x"], datasets=["y"], views=2)
    with pytest.raises(ConfigError, match="Unknown keys \\['bakcbone'\\]"):
        ExtractConfig.from_dict({"bakcbone": "x", "datasets": ["y"], "backbones": ["x"]})


# -- kill -9 in the middle, then resume ------------------------------------------------

KILL_SCRIPT = """
import sys, numpy as np, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from helpers import make_images
from featstore.backbones import create_backbone
from featstore.data._base import ArraySampleSet
from featstore.extract import ExtractConfig, extract_one
images, labels = make_images({n})
samples = ArraySampleSet(data=images, name="tiny", split="train", modality="image",
                         sample_ids=[f"s{{i}}" for i in range({n})], labels=labels)
cfg = ExtractConfig(backbones=["timm:test_resnet"], datasets=["tiny"], root={root!r},
                    format={fmt!r}, chunk_rows=32, batch_size=8, num_workers=0,
                    pretrained=False, progress=False)
bb = create_backbone("timm:test_resnet", pretrained=False, image_size=128)
encode = bb.encode
def encode_and_report(batch):  # the parent kills us after a given batch
    out = encode(batch)
    print("batch", flush=True)
    return out
bb.encode = encode_and_report
print(extract_one(bb, samples, cfg, torch.device("cpu")).path, flush=True)
"""


def _run_script(root: Path, fmt: str, n: int) -> subprocess.Popen:
    code = KILL_SCRIPT.format(tests=str(Path(__file__).parent), n=n, root=str(root), fmt=fmt)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["zarr", "hdf5"])
def test_kill_9_then_resume_gives_identical_bytes(tmp_path, fmt):
    n = 960  # 30 chunks of 32 rows, 120 batches of 8
    reference = _run_script(tmp_path / "ref", fmt, n)
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    ref_path = out.strip().splitlines()[-1]

    # Kill the same run after its 50th of 120 batches: mid-run whatever the machine's speed.
    killed = _run_script(tmp_path / "run", fmt, n)
    try:
        seen = 0
        while seen < 50:
            line = killed.stdout.readline()
            assert line, f"the run ended early: {killed.stderr.read()}"
            seen += line.startswith("batch")
        os.kill(killed.pid, signal.SIGKILL)
    finally:
        killed.kill()
        killed.communicate()  # reap it and close its pipes
    assert killed.returncode == -signal.SIGKILL
    entries = list(Root(tmp_path / "run"))
    assert entries and not entries[0].complete  # never reads as complete
    with pytest.raises(StoreIncompleteError):
        open_store(entries[0].path)

    resumed = _run_script(tmp_path / "run", fmt, n)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    with open_store(out.strip().splitlines()[-1]) as fs, open_store(ref_path) as ref:
        assert fs.metadata["extraction"]["resumed_chunks"] >= 1 or fmt == "hdf5"
        assert fs.load_features().tobytes() == ref.load_features().tobytes()
        assert fs.verify().ok


def test_full_disk_keeps_committed_chunks_and_never_completes(tmp_path, backbone, monkeypatch):
    """ENOSPC while writing chunk 2: a clear error, chunks 0-1 kept, a rerun finishes."""
    from featstore.errors import DiskFullError

    free_disk = fill_disk_at_chunk(monkeypatch, 2)
    with pytest.raises(DiskFullError, match="disk .* is full.*resumes"):
        extract_one(backbone, _samples(), _cfg(tmp_path), CPU)
    [entry] = list(Root(tmp_path))
    assert not entry.complete
    with open_store(entry.path, allow_incomplete=True) as fs:
        assert fs.committed_chunks() == {0, 1}
    free_disk()
    res = extract_one(backbone, _samples(), _cfg(tmp_path), CPU)
    assert res.resumed_chunks == 2 and res.computed_chunks == 2


def test_each_backbone_loaded_once_for_all_datasets(tmp_path, tiny_npz, tiny_folder, monkeypatch):
    import featstore.extract.pipeline as pipeline
    from featstore.extract import extract

    calls = []
    real = pipeline.create_backbone

    def counting(spec, **kw):
        calls.append(spec)
        return real(spec, **kw)

    monkeypatch.setattr(pipeline, "create_backbone", counting)
    cfg = ExtractConfig(backbones=["timm:test_resnet", "timm:test_efficientnet"],
                        datasets=[str(tiny_npz), str(tiny_folder)], splits=["train"],
                        root=str(tmp_path / "r"), pretrained=False, image_size=32,
                        num_workers=0, progress=False)
    results = extract(cfg)
    assert calls == ["timm:test_resnet", "timm:test_efficientnet"]
    assert len(results) == 4 and len({r.key for r in results}) == 4


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_temporary_files_of_killed_writes_never_stay_in_a_set(tmp_path, backbone):
    """Zarr writes each chunk and zarr.json to `NAME.<32 hex>.partial`, then renames it:
    a kill between the two leaves that file. The resumed set holds exactly a clean run's
    files; a folder a kill left with only a bare group and such a file is started again
    (both seen by tests/test_crash.py on a loaded machine)."""
    samples = _samples()
    ref = extract_one(backbone, samples, _cfg(tmp_path / "ref"), CPU)
    ref_files = _files(Path(ref.path))

    # Killed mid-run: chunk 1 never committed, its temporary file left behind.
    run = extract_one(backbone, samples, _cfg(tmp_path / "run"), CPU)
    path = Path(run.path)
    with open_store(path, "r+") as fs:
        fs.metadata["complete"] = False
        fs._write_meta()
        fs._array("chunk_sha256")[1] = ""
    (path / "features/c/1/0").rename(path / f"features/c/1/0.{'ab' * 16}.partial")
    (path / f"zarr.json.{'cd' * 16}.partial").write_bytes(b"{}")
    resumed = extract_one(backbone, samples, _cfg(tmp_path / "run"), CPU)
    assert not resumed.cached and resumed.computed_chunks == 1
    got = _files(path)
    assert set(got) == set(ref_files)
    for name in got:  # chunk files are byte-identical; group metadata differs in timings
        if "/c/" in name:
            assert got[name] == ref_files[name], name

    # Killed while creating the group: zarr.json without featstore's metadata, and a
    # temporary file beside it.
    (tmp_path / "new").mkdir()
    bare = tmp_path / "new" / path.name
    bare.mkdir()
    (bare / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    (bare / f"zarr.{'ef' * 16}.partial").write_text("{}")
    again = extract_one(backbone, samples, _cfg(tmp_path / "new"), CPU)
    assert not again.cached and again.computed_chunks == 4
    assert set(_files(bare)) == set(ref_files)
