"""`featstore serve --ray`: the service's workers as Ray actors on a real two-node cluster.

The service runs as a real subprocess (`featstore serve --ray ADDRESS --port 0` on
127.0.0.1) driving one actor per CPU slot of the session's two-node cluster (fixture
``ray_cluster``: one CPU per node, so one actor per node). Its plugin backbones
(tests/service_backbones.py, copied next to the service, whose folder Ray puts on the
actors' path) sleep in every forward pass (FEATSTORE_TEST_SLOW, which the service
forwards to its actors), so that a node can be removed mid-job.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featstore.errors import ConfigError, FeatstoreError
from featstore.store import open_store
from featstore.workflows.service.config import parse_ray_devices
from featstore.workflows.service.queue import JobQueue, default_queue_path
from featstore_cli.main import cli

from helpers import make_images
from ray_cluster import needs_ray
from test_service import Server, bb

TESTS = Path(__file__).parent
NODE_CHARS = 12  # of a Ray node id in a worker's name: r0-cpu@3fa2c1d09b7e


def _npz(path: Path, n: int, seed: int) -> Path:
    images, labels = make_images(n, seed=seed)
    np.savez(path, x=images, y=labels)
    return path


def _node(job: dict[str, Any]) -> str:
    return job["worker"].rpartition("@")[2]


def _published(path: str) -> bool:
    """Whether ``path`` opens as a complete feature set (an incomplete one is refused)."""
    try:
        with open_store(path):
            return True
    except FeatstoreError:
        return False


def _wait_alive(server: Server, n: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while True:
        status, health = server.request("GET", "/health", token=None)
        if status == 200 and health["workers"]["alive"] == n:
            return
        assert time.time() < deadline, (health, server.err.read_text()[-2000:])
        assert server.proc.poll() is None, server.err.read_text()
        time.sleep(0.2)


def _same_as_local(runner: Any, job: dict[str, Any], root: Path) -> None:
    """The job's feature set equals one `featstore extract` in this process: key and bytes."""
    o = job["options"]
    res = runner.invoke(cli, ["extract", "--backbone", job["backbone"], "--dataset",
                              job["dataset"], "--split", job["split"], "--root", str(root),
                              "--chunk-rows", str(o["chunk_rows"]), "--batch-size",
                              str(o["batch_size"]), "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    local = json.loads(res.stdout)[0]
    assert local["key"] == job["key"]
    with open_store(job["path"]) as got, open_store(local["path"]) as want:
        assert got.verify().ok
        assert got.load_features().tobytes() == want.load_features().tobytes()
        assert np.array_equal(got.valid, want.valid) and got.valid.all()


@pytest.fixture(scope="module")
def ray_service(ray_cluster, tmp_path_factory):
    """`featstore serve --ray` on the two-node cluster, both actors placed."""
    folder = tmp_path_factory.mktemp("ray-service")
    shutil.copy(TESTS / "service_backbones.py", folder)  # the service's folder: on Ray's path
    server = Server(folder, "--ray", ray_cluster.address, devices="auto",
                    env={"FEATSTORE_TEST_SLOW": "0.15"})
    try:
        _wait_alive(server, 2)
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.err.read_text()
    assert "Service stopped." in server.out.read_text()


@needs_ray
def test_jobs_run_on_both_nodes_and_equal_a_local_extraction(ray_service, ray_cluster,
                                                             tmp_path, runner):
    s = ray_service
    out = s.out.read_text()
    assert "2 Ray actors (cpu x2)" in out, out
    d1, d2 = _npz(tmp_path / "d1.npz", 64, 0), _npz(tmp_path / "d2.npz", 48, 1)
    request = {"backbones": [bb("alpha"), bb("beta")], "datasets": [str(d1), str(d2)],
               "split": "train", "chunk_rows": 16, "batch_size": 8}
    status, body = s.request("POST", "/jobs", request)
    assert status == 202, body
    jobs = s.wait([j["id"] for j in body["jobs"]], timeout=120)
    assert all(j["state"] == "done" and j["attempts"] == 1 for j in jobs), jobs

    nodes = {ray_cluster.cluster.head_node.node_id, ray_cluster.worker.node_id}
    assert {_node(j) for j in jobs} == {n[:NODE_CHARS] for n in nodes}, [j["worker"] for j in jobs]
    for j in jobs:
        n = 64 if Path(j["dataset"]).stem == "d1" else 48
        assert j["progress"] == {"chunks_done": n // 16, "chunks_total": n // 16}
        assert j["result"]["computed_chunks"] == n // 16 and j["result"]["shape"] == [n, 8]
        status, log = s.request("GET", f"/jobs/{j['id']}/log")
        node = next(x for x in nodes if x.startswith(_node(j)))
        assert f"on Ray node {node}" in log["log"], log["log"]
        assert f"computed {n // 16} chunks" in log["log"], log["log"]
        _same_as_local(runner, j, tmp_path / "local")
    # The operator's log of each actor, on the service's machine.
    logs = sorted(p.name for p in (s.root / ".featstore" / "queue-logs").glob("worker-r*.log"))
    assert logs == ["worker-r0-cpu.log", "worker-r1-cpu.log"]


@needs_ray
def test_node_removed_mid_job_the_job_resumes_on_the_other_node(ray_service, ray_cluster,
                                                                 tmp_path, runner):
    # Two jobs of 15 chunks (30 forward passes of 0.15 s each): one per actor, so one
    # runs on the worker node, which is removed once that job has committed a chunk.
    s = ray_service
    data = [_npz(tmp_path / f"big{i}.npz", 240, 10 + i) for i in range(2)]
    status, body = s.request("POST", "/jobs", {"backbone": bb("gamma"),
                                               "datasets": [str(d) for d in data],
                                               "chunk_rows": 16, "batch_size": 8})
    assert status == 202, body
    ids = [j["id"] for j in body["jobs"]]
    doomed, head = ray_cluster.worker.node_id, ray_cluster.cluster.head_node.node_id
    deadline, removed = time.time() + 90, False
    try:
        while True:
            jobs = [s.job(i) for i in ids]
            victim = next((j for j in jobs if j["state"] == "running" and j["worker"]
                           and _node(j) == doomed[:NODE_CHARS]
                           and (j["progress"] or {}).get("chunks_done", 0) >= 1), None)
            if victim is not None:
                break
            assert time.time() < deadline and all(j["state"] != "done" or _node(j) !=
                                                   doomed[:NODE_CHARS] for j in jobs), jobs
            time.sleep(0.1)
        committed = victim["progress"]["chunks_done"]
        assert committed < 15 and not _published(victim["path"])
        ray_cluster.remove_node(ray_cluster.worker)
        removed = True

        # Until it is done, nothing but a complete store is ever at the job's path.
        deadline = time.time() + 150
        while (job := s.job(victim["id"]))["state"] not in ("done", "failed"):
            if _published(victim["path"]):
                with open_store(victim["path"]) as fs:
                    assert len(fs.committed_chunks()) == fs.n_chunks == 15
            assert time.time() < deadline, job
            time.sleep(0.2)
    finally:
        if removed:  # the session's cluster: two nodes again
            ray_cluster.worker = ray_cluster.add_node()
            ray_cluster.cluster.wait_for_nodes()

    assert job["state"] == "done", job
    assert job["attempts"] == 2 and _node(job) == head[:NODE_CHARS], job
    assert job["result"]["resumed_chunks"] >= committed >= 1
    assert job["result"]["resumed_chunks"] + job["result"]["computed_chunks"] == 15
    status, body = s.request("GET", f"/jobs/{victim['id']}/log")
    log = body["log"]
    assert f"on Ray node {doomed}" in log and "died (" in log, log
    # What the lost attempt did reached the log while it ran, before its node went.
    assert f"attempt 1 of 3 on worker r1-cpu@{doomed[:NODE_CHARS]}" in log \
        or f"attempt 1 of 3 on worker r0-cpu@{doomed[:NODE_CHARS]}" in log, log
    assert "attempt 2 of 3" in log and "resumed from" in log, log
    assert "died (" in s.err.read_text()
    other = s.wait([i for i in ids if i != victim["id"]], timeout=60)[0]
    assert other["state"] == "done" and other["attempts"] == 1, other
    for j in (job, other):
        _same_as_local(runner, j, tmp_path / "local")
    # The dead actor's place is taken by a new one on the node added back.
    _wait_alive(s, 2, timeout=90)
    assert ray_cluster.worker.node_id[:NODE_CHARS] in s.out.read_text()


@needs_ray
def test_a_failing_job_reports_like_a_local_worker(ray_service, tmp_path):
    s = ray_service
    data = _npz(tmp_path / "small.npz", 32, 30)
    status, body = s.request("POST", "/jobs", {"backbone": bb("broken"), "dataset": str(data),
                                               "chunk_rows": 16, "batch_size": 8})
    assert status == 202, body
    job = s.wait([body["jobs"][0]["id"]], timeout=90)[0]
    assert job["state"] == "failed" and job["attempts"] == 3, job
    assert job["error"].startswith("RuntimeError while extracting features of the data set")
    assert "on purpose" not in job["error"]  # clients never read the message itself
    status, body = s.request("GET", f"/jobs/{job['id']}/log")
    assert "failed on attempt 3 of 3" in body["log"] and job["error"] in body["log"]
    workers = "".join(p.read_text() for p in s.root.glob(".featstore/queue-logs/worker-r*.log"))
    assert "RuntimeError: this backbone is broken on purpose" in workers  # the operator's


@needs_ray
def test_stopping_the_service_gives_running_jobs_back_with_their_chunks(ray_service, tmp_path):
    # Last of the tests on the module's service: it stops it (its fixture then finds it
    # stopped, with exit code 0).
    s = ray_service
    data = _npz(tmp_path / "stop.npz", 240, 20)
    status, body = s.request("POST", "/jobs", {"backbone": bb("delta"), "dataset": str(data),
                                               "chunk_rows": 16, "batch_size": 8})
    assert status == 202, body
    job_id = body["jobs"][0]["id"]
    deadline = time.time() + 90
    while (job := s.job(job_id))["state"] != "running" \
            or (job["progress"] or {}).get("chunks_done", 0) < 1:
        assert job["state"] in ("queued", "running") and time.time() < deadline, job
        time.sleep(0.1)
    assert s.stop() == 0, s.err.read_text()

    queue = JobQueue(default_queue_path(str(s.root)))
    stopped = queue.get(job_id)
    assert stopped is not None and stopped["state"] == "queued", stopped
    assert stopped["attempts"] == 0  # a clean stop does not use up an attempt
    assert "stopped (the service is stopping)" in queue.log_path(job_id).read_text()
    assert not _published(job["path"])
    with open_store(job["path"], allow_incomplete=True) as fs:  # the next start resumes these
        assert len(fs.committed_chunks()) >= job["progress"]["chunks_done"]
    assert "killed when the service stopped" not in s.out.read_text() + s.err.read_text()


# -- without a cluster -----------------------------------------------------------------
def test_without_ray_serve_says_how_to_install_it(tmp_path, runner, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    res = runner.invoke(cli, ["serve", "--root", str(tmp_path / "root"), "--ray", "auto"])
    assert res.exit_code != 0
    assert res.output.strip().splitlines() == [
        "Error: --ray needs Ray, which is not installed: pip install 'featstore[ray]'"]
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


def test_ray_address_and_worker_kinds_are_checked(tmp_path, runner):
    res = runner.invoke(cli, ["serve", "--root", str(tmp_path / "root"), "--ray", "not an address"])
    assert res.exit_code != 0 and len(res.output.strip().splitlines()) == 1
    assert "expected 'auto'" in res.output and "HOST:PORT" in res.output
    assert parse_ray_devices("auto") == ["auto"]
    assert parse_ray_devices("cpu, cuda,gpu") == ["cpu", "cuda", "cuda"]
    with pytest.raises(ConfigError, match="Ray gives each cuda worker a GPU of its own"):
        parse_ray_devices("cuda:1")


def test_workers_per_device_of_the_cluster_and_what_they_inherit(monkeypatch):
    from featstore.workflows.service.ray_workers import forwarded_env, plan_workers

    assert plan_workers(["auto"], {"CPU": 16.0, "GPU": 4.0}, "auto") == ["cuda"] * 4
    assert plan_workers(["auto"], {"CPU": 3.0}, "auto") == ["cpu"] * 3
    assert plan_workers(["cpu", "cuda"], {"CPU": 1.0}, "auto") == ["cpu", "cuda"]
    with pytest.raises(ConfigError, match="no CPU or GPU"):
        plan_workers(["auto"], {"memory": 1e9}, "10.0.0.5:6379")
    monkeypatch.setenv("FEATSTORE_DATA_DIR", "/data")
    monkeypatch.setenv("FEATSTORE_SERVICE_TOKENS", "alice:" + "x" * 20)
    monkeypatch.setenv("FEATSTORE_TOKEN", "y" * 20)
    env = forwarded_env()
    assert env.get("FEATSTORE_DATA_DIR") == "/data"
    assert "FEATSTORE_SERVICE_TOKENS" not in env and "FEATSTORE_TOKEN" not in env
