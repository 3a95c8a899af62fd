"""Shared fixtures: tiny synthetic data sets written to disk, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# Tests never reach a model hub, even where the machine has internet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_images(n: int, size: int = 16, classes: int = 3, seed: int = 0):
    """Class-dependent images so that features carry label information."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    base = rng.integers(0, 255, (classes, size, size))
    noise = rng.integers(-40, 40, (n, size, size))
    images = np.clip(base[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    images, labels = make_images(150)
    path = tmp_path / "tiny.npz"
    np.savez(path, x=images, y=labels)
    return path


@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    """An image folder with 3 classes x 8 PNGs, one corrupt file and one text file."""
    from PIL import Image

    images, labels = make_images(24)
    root = tmp_path / "imgs"
    for i, (img, lab) in enumerate(zip(images, labels)):
        d = root / f"class{lab}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.png")
    (root / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "class1" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


def tiny_extract_args(dataset: Path, root: Path, *extra: str) -> list[str]:
    """CLI arguments of a fast extraction with timm's tiny random test_resnet."""
    return ["extract", "--backbone", "timm:test_resnet", "--random-weights", "--image-size", "32",
            "--dataset", str(dataset), "--root", str(root), "--chunk-rows", "32",
            "--batch-size", "8", "--workers", "0", "--no-progress", *extra]
