"""`featstore sweep --ray`: on a real two-node Ray cluster (tests/ray_cluster.py) the
results file equals a local sweep's, row for row, up to timings; a partly done file
resumes on the cluster with only the missing runs.

Both engines pin every run to one torch and one BLAS thread (``threads`` in each record),
so the trained heads, scores and spectra are the same numbers.
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

from helpers import assert_user_error, make_images, tiny_extract_args

pytestmark = [
    pytest.mark.slow,
    # Ray's own warnings, raised where Ray runs: not featstore's to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]

DEADLINE = 300.0  # seconds one sweep subprocess may take before the test fails
#: Fields that say when and how long, not what: dropped before comparing records.
TIMING = {"fit_seconds", "created_at"}


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tiny stores and a sweep of 6 runs over them (lp and an nmtune grid, 2 seeds)."""
    from click.testing import CliRunner

    folder = tmp_path_factory.mktemp("sweep-ray")
    paths = {}
    for name, seed in (("train", 0), ("test", 1)):
        images, labels = make_images(96, seed=0)
        noise = np.random.default_rng(seed).integers(0, 20, images.shape)
        np.savez(folder / f"{name}.npz", x=np.clip(images + noise, 0, 255).astype(np.uint8),
                 y=labels)
        res = CliRunner().invoke(cli, tiny_extract_args(folder / f"{name}.npz", folder / "r",
                                                        "--json"))
        assert res.exit_code == 0, res.output
        paths[name] = json.loads(res.output)[0]["path"]
    cfg = folder / "sweep.yaml"
    cfg.write_text(f"""
results: {folder / 'local.jsonl'}
jobs:
  - {{train: {paths['train']}, test: {paths['test']}, ood: [{paths['test']}]}}
methods: [lp, nmtune]
seeds: 2
params: {{epochs: 2, device: cpu}}
grid:
  nmtune: {{lambda_svd: [0.0, 0.01]}}
workers: 2
""")
    return cfg


def with_results(cfg: Path, results: Path) -> Path:
    """The sweep file ``cfg`` writing to ``results`` instead."""
    out = results.with_suffix(".yaml")
    lines = [f"results: {results}" if line.startswith("results:") else line
             for line in cfg.read_text().splitlines()]
    out.write_text("\n".join(lines) + "\n")
    return out


def without_timing(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_timing(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list):
        return [without_timing(v) for v in value]
    return value


def rows(results: Path) -> list[dict[str, Any]]:
    return [without_timing(json.loads(line)) for line in results.read_text().splitlines()]


def sweep_on_ray(cfg: Path, address: str) -> dict[str, Any]:
    """``featstore sweep CFG --ray ADDRESS --json`` in its own process (its own driver)."""
    res = subprocess.run([sys.executable, "-m", "featstore_cli.main", "sweep", str(cfg),
                          "--ray", address, "--json"],
                         capture_output=True, text=True, timeout=DEADLINE)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout)


@pytest.fixture(scope="module")
def local_rows(sweep_file: Path) -> list[dict[str, Any]]:
    from click.testing import CliRunner

    res = CliRunner().invoke(cli, ["sweep", str(sweep_file), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["ran"] == 6
    return rows(sweep_file.parent / "local.jsonl")


def test_sweep_on_ray_equals_local(ray_cluster: Any, sweep_file: Path, local_rows: list):
    results = sweep_file.parent / "ray.jsonl"
    summary = sweep_on_ray(with_results(sweep_file, results), ray_cluster.address)
    assert (summary["ran"], summary["skipped"], summary["workers"]) == (6, 0, 2)
    got = rows(results)
    assert [r["run_id"] for r in got] == [r["run_id"] for r in local_rows]  # the grid's order
    assert got == local_rows  # scores, spectra, parameters: the same numbers
    assert {r["threads"] for r in got} == {1}


def test_sweep_on_ray_resumes(ray_cluster: Any, sweep_file: Path, local_rows: list):
    """A results file holding runs 2 and 5 (and a line cut by a kill): only the 4 others
    run on the cluster, appended in the grid's order after what was there."""
    local = (sweep_file.parent / "local.jsonl").read_text().splitlines()
    results = sweep_file.parent / "resumed.jsonl"
    results.write_text(f"{local[1]}\n{local[4]}\n{local[0][:40]}")
    summary = sweep_on_ray(with_results(sweep_file, results), ray_cluster.address)
    assert (summary["ran"], summary["skipped"]) == (4, 2)
    lines = results.read_text().splitlines()
    assert lines[2] == local[0][:40]  # the cut line is left alone, and skipped when read
    resumed = [without_timing(json.loads(x)) for i, x in enumerate(lines) if i != 2]
    assert resumed == [local_rows[i] for i in (1, 4, 0, 2, 3, 5)]


def test_sweep_ray_bad_input(runner, sweep_file: Path, monkeypatch):
    res = runner.invoke(cli, ["sweep", str(sweep_file), "--ray", "localhost"])
    assert_user_error(res, "--ray 'localhost'", "HOST:PORT")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    res = runner.invoke(cli, ["sweep", str(sweep_file), "--ray", "auto"])
    assert_user_error(res, "pip install 'featstore[ray]'")


def test_failing_run_fails_the_sweep_once(ray_cluster: Any, tmp_path: Path):
    """A run that raises is not retried: its featstore error (not Ray's wrapper) stops the
    sweep after the runs before it were handed over, in order; a run after it that had
    finished is kept."""
    from featstore.errors import DataError
    from featstore.workflows.sweep_ray import RayRuns

    calls = tmp_path / "calls"
    calls.mkdir()

    def fn(run: dict[str, Any]) -> dict[str, Any]:
        import time

        (calls / f"{run['i']}-{time.monotonic_ns()}").touch()  # the cluster is this machine
        if run["i"] == 1:
            time.sleep(2)
            raise DataError("run 1 cannot be trained")
        return {"i": run["i"]}

    todo = [{"i": i, "train": "a", "test": "b", "ood": []} for i in range(3)]
    got = []
    try:
        executor = RayRuns(ray_cluster.address, timeout=DEADLINE)
        with pytest.raises(DataError, match="run 1 cannot be trained"):
            for rec in executor(todo, fn):
                got.append(rec["i"])
    finally:
        import ray

        ray.shutdown()
    assert got in ([0], [0, 2]), got  # 2 is kept if it had finished by then
    assert sorted(p.name.split("-")[0] for p in calls.iterdir()).count("1") == 1
