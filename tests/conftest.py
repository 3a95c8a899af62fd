"""Shared fixtures: tiny synthetic data sets written to disk, a CLI runner, an S3 server.

Functions the tests call themselves live in helpers.py (import them from there, never
from this file)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import ray_cluster as _ray_env  # noqa: F401  (sets Ray's environment before anything imports Ray)
from helpers import S3_TEST_SECRET, is_fast, make_images, start_moto

# Tests never reach a model hub, even where the machine has internet.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the edit loop's tests ``fast`` (helpers.FAST_TESTS): ``pytest -m fast``."""
    for item in items:
        if is_fast(item.path.name, getattr(item, "originalname", item.name)) \
                and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.fast)


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


# -- a real S3-compatible server on 127.0.0.1 (moto's, from PyPI) ----------------------
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


@pytest.fixture(scope="session")
def ray_cluster():
    """A real two-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py), shared by the
    session; skips when Ray is not installed. A test that removes a node adds one back."""
    from ray_cluster import TwoNodeCluster, ray_available

    if not ray_available():
        pytest.skip("Ray is not installed: pip install 'featstore[ray]'")
    cluster = TwoNodeCluster()
    yield cluster
    cluster.shutdown()
