"""`featstore spectrum --ray`: the Gram reduction on a real two-node Ray cluster
(tests/ray_cluster.py) gives the local spectrum bit for bit.

The workers (one BLAS thread each) compute every chunk's partial Gram matrix; the driver
sums them in chunk order, as the local path does. Equality is exact: the singular values
are compared as floats with ``==`` and the CLI's JSON as text.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featstore_cli.main import cli

from helpers import assert_user_error

pytestmark = [
    pytest.mark.slow,
    # Ray's own warnings, raised where Ray runs: not featstore's to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

DEADLINE = 120.0  # seconds any one wait of these tests may take before it fails
N, D, CHUNK_ROWS = 300, 48, 32  # 10 chunks, the last one short


@pytest.fixture
def driver(ray_cluster: Any):
    """The cluster's address; this process's Ray connection is closed afterwards."""
    yield ray_cluster.address
    import ray

    ray.shutdown()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete Zarr set of 10 chunks with invalid rows, features spanning six orders
    of magnitude (so that summing its chunks in another order changes the last bits)."""
    from featstore.store import create_store, schema

    rng = np.random.default_rng(7)
    x = (rng.normal(size=(N, D)) * np.geomspace(1e3, 1e-3, D)).astype(np.float32)
    valid = rng.random(N) > 0.1
    path = tmp_path_factory.mktemp("spectrum-ray") / "s.zarr"
    meta = {"schema_version": schema.SCHEMA_VERSION, "key": "spectrumray" * 4, "complete": False,
            "n_samples": N, "n_features": D, "chunk_rows": CHUNK_ROWS,
            "backbone": {"id": "synthetic"},
            "dataset": {"name": "synthetic", "split": "train", "classes": None}}
    st = create_store(path, metadata=meta, n_features=D, n_views=1, dtype="float32",
                      chunk_rows=CHUNK_ROWS, sample_ids=[str(i) for i in range(N)], labels=None,
                      codec="zstd")
    for c in range(schema.n_chunks(N, CHUNK_ROWS)):
        s, e = schema.chunk_bounds(c, N, CHUNK_ROWS)
        st.write_chunk(c, np.where(valid[s:e, None], x[s:e], 0), valid[s:e])
    st.mark_complete()
    return path


def test_reduction_order_matters(store: Path):
    """The test data can tell orders apart: the chunks' partial Grams summed in reverse
    give other bits than in chunk order (so equality below is not a coincidence)."""
    from featstore.analysis.spectrum import gram_partial, reduce_partials, store_block
    from featstore.store import open_store

    with open_store(store) as fs:
        parts = [gram_partial(store_block(b, fs.valid[s:e]), "none")
                 for s, e, b in fs.iter_chunks()]
    forward, _ = reduce_partials(parts, "none")
    backward, _ = reduce_partials(parts[::-1], "none")
    assert len(parts) == 10 and not np.array_equal(forward, backward)


@pytest.mark.parametrize("how", ["l2", "none", "center", "l2-rowmean"])
def test_ray_spectrum_equals_local_exactly(driver: str, store: Path, how: str):
    from featstore.analysis.gram_ray import spectrum_of_store_on_ray
    from featstore.analysis.spectrum import spectrum_of_store
    from featstore.store import open_store

    with open_store(store) as fs:
        local = spectrum_of_store(fs, how)
    remote = spectrum_of_store_on_ray(str(store), driver, how, timeout=DEADLINE)
    assert remote.sigma == local.sigma  # every singular value, bit for bit
    assert (remote.sve, remote.lsvr, remote.n_rows) == (local.sve, local.lsvr, local.n_rows)
    assert remote.as_dict() == local.as_dict()


def test_chunks_planned_in_order():
    """Consecutive chunks per task, every chunk once, several tasks in flight."""
    from featstore.analysis.gram_ray import plan_tasks

    tasks, window = plan_tasks(10, D, slots=2)
    assert [c for t in tasks for c in t] == list(range(10)) and len(tasks) > 2 and window >= 2
    tasks, window = plan_tasks(1000, 4096, slots=64)  # 128 MiB per partial: fewer in flight
    assert window * max(map(len, tasks)) * 4096**2 * 8 <= 512 * 1024**2


def test_cli_spectrum_ray_equals_local(driver: str, store: Path, runner):
    local = runner.invoke(cli, ["spectrum", str(store), "--preprocessing", "center", "--json"])
    assert local.exit_code == 0, local.output
    remote = subprocess.run([sys.executable, "-m", "featstore_cli.main", "spectrum", str(store),
                             "--preprocessing", "center", "--json", "--ray", driver],
                            capture_output=True, text=True, timeout=DEADLINE)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == json.loads(local.output)
    assert remote.stdout == local.output  # floats printed alike: the same bits


def test_spectrum_ray_bad_input(runner, store: Path, monkeypatch):
    res = runner.invoke(cli, ["spectrum", str(store), "--ray", "not an address"])
    assert_user_error(res, "--ray 'not an address'", "HOST:PORT")
    res = runner.invoke(cli, ["spectrum", str(store), "--ray", "auto", "--head", "heads/lp"])
    assert res.exit_code == 2 and "--head" in res.output and "Traceback" not in res.output
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = runner.invoke(cli, ["spectrum", str(store), "--ray", "127.0.0.1:6379"])
    assert_user_error(res, "pip install 'featstore[ray]'")
