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


# -- a real S3-compatible server on 127.0.0.1 (moto's, from PyPI) ----------------------
#: A secret no test ever expects to see in a store, a log or a job queue.
S3_TEST_SECRET = "featstore-test-secret-4b1d9c"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_moto(env: dict[str, str] | None = None):
    """Start moto's S3 server on a free port of 127.0.0.1; (process, endpoint) once it listens."""
    import shutil
    import socket
    import subprocess
    import sys
    import time

    # This interpreter's moto first: a moto_server on PATH may be another Python's.
    exe = str(Path(sys.executable).with_name("moto_server"))
    if not Path(exe).exists():
        exe = shutil.which("moto_server") or exe
    if not Path(exe).exists():
        pytest.skip("moto_server not installed: pip install -e '.[test]'")
    port = _free_port()
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail("moto_server did not start on 127.0.0.1")


@pytest.fixture(scope="session")
def s3_server():
    """The endpoint of an S3 server: $FEATSTORE_TEST_S3_ENDPOINT (.ci/run starts one), else
    a moto server started here. Credentials go where every S3 client looks: AWS_* vars."""
    endpoint = os.environ.get("FEATSTORE_TEST_S3_ENDPOINT")
    proc = None
    if not endpoint:
        proc, endpoint = start_moto()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="featstore-test",
                      AWS_SECRET_ACCESS_KEY=S3_TEST_SECRET, AWS_DEFAULT_REGION="us-east-1")
    yield endpoint
    if proc is not None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def s3_root(s3_server, request) -> str:
    """A new bucket for this test, as a root URL: s3://BUCKET/features."""
    import uuid

    import s3fs

    bucket = f"t-{uuid.uuid4().hex[:12]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    return f"s3://{bucket}/features"
