"""The extraction service: queue, workers, HTTP API, tokens, limits and clients.

Servers run as real subprocesses (`featstore serve --port 0` on 127.0.0.1) with real
worker processes; the plugin backbones of tests/service_backbones.py count backbone
loads and forward passes in files, so the tests can tell what ran where and how often.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featstore.errors import ConfigError
from featstore.workflows.service import client
from featstore.workflows.service.errors import (AuthenticationError, ServiceBusyError,
                                      ServiceUnavailableError)
from featstore.workflows.service.queue import JobQueue, default_queue_path
from featstore.workflows.service.requests import DataDirs, JobRequest, expand
from featstore.workflows.service.tokens import TokenSet, load_tokens
from featstore.store import open_store
from featstore_cli.main import cli

from helpers import free_port, make_images

TESTS = Path(__file__).parent
ALICE = "alice-" + "a1" * 12
BOB = "bob-" + "b2" * 12
LEASE = "3"  # seconds: short, so that a dead worker's leases run out quickly
PLUGINS = ("service_backbones",)


def bb(name: str) -> str:
    return f"service_backbones:{name}"


def _npz(path: Path, n: int, seed: int) -> Path:
    images, labels = make_images(n, seed=seed)
    np.savez(path, x=images, y=labels)
    return path


class Server:
    """`featstore serve` in a subprocess, and plain HTTP calls to it."""

    def __init__(self, folder: Path, *args: str, devices: str = "cpu,cpu",
                 env: dict[str, str] | None = None, data_dirs: tuple[Path, ...] | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        # Jobs may read files only in data folders: by default the test's temporary folder.
        data_dirs = (folder.parent,) if data_dirs is None else data_dirs
        self.folder, self.root = folder, folder / "root"
        tokens = folder / "tokens.txt"
        tokens.write_text(f"# test tokens\nalice:{ALICE}\nbob:{BOB}\n")
        tokens.chmod(0o600)
        self.loads, self.calls = folder / "loads.txt", folder / "calls.txt"
        full_env = {**os.environ, **(env or {}),
                    "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS),
                                                              os.environ.get("PYTHONPATH")) if p),
                    "FEATSTORE_TEST_LOADS": str(self.loads),
                    "FEATSTORE_TEST_CALLS": str(self.calls)}
        full_env.pop("FEATSTORE_SERVICE_TOKENS", None)
        self.out, self.err = folder / "serve.out", folder / "serve.err"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "featstore_cli.main", "serve", "--root", str(self.root),
                 "--devices", devices, "--port", "0", "--tokens-file", str(tokens),
                 "--lease-seconds", LEASE, "--allow-plugin", "service_backbones",
                 *(a for d in data_dirs for a in ("--data-dir", str(d))), *args],
                stdout=out, stderr=err, env=full_env, cwd=folder)
        self.url = self._wait_for_url()
        self.host, self.port = self.url[len("http://"):].rsplit(":", 1)
        self.worker_pids = [int(p) for p in re.findall(r"pid (\d+)", self.out.read_text())]

    def _wait_for_url(self) -> str:
        deadline = time.time() + 120
        while time.time() < deadline:
            found = re.search(r"listening on (http://\S+)", self.out.read_text())
            if found and "Stop with Ctrl-C" in self.out.read_text():
                return found.group(1)
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited: {self.err.read_text()}")
            time.sleep(0.1)
        self.close()
        raise AssertionError("serve did not start in 120 s")

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = ALICE,
                raw: bytes | None = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=60)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def job(self, job_id: int) -> dict[str, Any]:
        status, job = self.request("GET", f"/jobs/{job_id}")
        assert status == 200, job
        return job

    def all_jobs(self) -> list[dict[str, Any]]:
        status, body = self.request("GET", "/jobs")
        assert status == 200, body
        return body["jobs"]

    def wait(self, ids: list[int], timeout: float = 120) -> list[dict[str, Any]]:
        deadline = time.time() + timeout
        while True:
            jobs = [self.job(i) for i in ids]
            if all(j["state"] in ("done", "failed") for j in jobs):
                return jobs
            assert time.time() < deadline, [(j["id"], j["state"], j["last_error"]) for j in jobs]
            time.sleep(0.2)

    def lines(self, path: Path) -> list[list[str]]:
        return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> int:
        """SIGTERM (what Ctrl-C does, less the terminal) and the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One service with two CPU workers, for the tests that do not need a special one."""
    folder = tmp_path_factory.mktemp("service")
    server = Server(folder, "--max-attempts", "2", "--keep-backbones", "8")
    server.d1 = _npz(folder / "d1.npz", 150, 0)
    server.d2 = _npz(folder / "d2.npz", 120, 1)
    try:
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.err.read_text()
    assert "Service stopped." in server.out.read_text()


# -- many jobs, two workers ------------------------------------------------------------
def test_twenty_jobs_each_done_once_each_backbone_loaded_once_per_worker(shared):
    s = shared
    d1, d2 = str(s.d1), str(s.d2)
    r1 = {"backbones": [bb("alpha"), bb("beta")], "datasets": [d1, d2],
          "splits": ["train", "test"], "chunk_rows": 32, "batch_size": 16}
    r2 = {**r1, "limit": 60, "seed": 1}
    r3 = {"backbone": bb("gamma"), "dataset": [d1, d2], "split": ["train", "val"],
          "chunk_rows": 32, "batch_size": 16}
    answers = []
    for request in (r1, r2, r3):
        status, body = s.request("POST", "/jobs", request)
        assert status == 202, body
        answers += body["jobs"]
    ids = [a["id"] for a in answers]
    assert len(set(ids)) == 20 and {a["status"] for a in answers} == {"queued"}
    # The same request again joins the queued or running jobs (or finds them done).
    status, again = s.request("POST", "/jobs", {**r1, "batch_size": 8})
    assert status == 200, again
    assert [a["id"] for a in again["jobs"]] == ids[:8]
    assert {a["status"] for a in again["jobs"]} <= {"joined", "cached"}

    jobs = s.wait(ids)
    sizes = {"d1": 150, "d2": 120}
    expected_rows: Counter[str] = Counter()
    for j in jobs:
        assert j["state"] == "done" and j["attempts"] == 1, j
        n = j["options"]["limit"] or sizes[Path(j["dataset"]).stem]
        r = j["result"]
        assert not r["cached"] and r["resumed_chunks"] == 0, r
        assert r["computed_chunks"] == -(-n // 32) and r["shape"] == [n, 8]
        assert j["progress"] == {"chunks_done": -(-n // 32), "chunks_total": -(-n // 32)}
        expected_rows[j["backbone"].split(":")[1]] += n
        with open_store(j["path"]) as fs:
            assert fs.verify().ok
    assert len({j["key"] for j in jobs}) == 20
    # Forward passes: the rows of every job exactly once (a job done twice would add its
    # rows again; every job computed all its chunks, so none was skipped).
    encoded: Counter[str] = Counter()
    for pid, name, rows in s.lines(s.calls):
        encoded[name] += int(rows)
    assert {k: encoded[k] for k in expected_rows} == dict(expected_rows)
    # Loads: every (worker, backbone) pair that ran jobs loaded the backbone once, and
    # no worker loaded a backbone it did not use.
    loads = Counter(tuple(x) for x in s.lines(s.loads) if x[1] in expected_rows)
    assert set(loads.values()) == {1}, loads
    used = {(str(j["worker_pid"]), j["backbone"].split(":")[1]) for j in jobs}
    assert set(loads) == used
    assert {int(pid) for pid, _ in used} <= set(s.worker_pids)


# -- cache hits --------------------------------------------------------------------------
def test_finished_request_is_answered_from_the_cache(shared):
    s = shared
    request = {"backbone": bb("delta"), "dataset": str(s.d1), "split": "cached",
               "chunk_rows": 32}
    status, body = s.request("POST", "/jobs", request)
    assert status == 202 and body["jobs"][0]["status"] == "queued"
    job = s.wait([body["jobs"][0]["id"]])[0]
    assert job["state"] == "done"
    calls, n_jobs = len(s.lines(s.calls)), len(s.all_jobs())

    # Options that do not change the values (batch size, decode workers) hit the cache too.
    status, body = s.request("POST", "/jobs", {**request, "batch_size": 7, "num_workers": 0})
    assert status == 200
    [hit] = body["jobs"]
    assert hit["status"] == "cached" and hit["id"] == job["id"]
    assert (hit["key"], hit["path"]) == (job["key"], job["path"])
    assert len(s.all_jobs()) == n_jobs and len(s.lines(s.calls)) == calls  # nothing ran

    # Without its store, the same request is a new job.
    shutil.rmtree(job["path"])
    status, body = s.request("POST", "/jobs", request)
    assert status == 202 and body["jobs"][0]["status"] == "queued"
    again = s.wait([body["jobs"][0]["id"]])[0]
    assert again["state"] == "done" and again["key"] == job["key"]
    assert Path(again["path"]).exists() and len(s.lines(s.calls)) > calls


# -- tokens ------------------------------------------------------------------------------
def test_missing_or_wrong_token_is_refused_and_queues_nothing(shared):
    s = shared
    before = len(s.all_jobs())
    request = {"backbone": bb("delta"), "dataset": str(s.d1), "split": "auth"}
    for token in (None, "wrong-token-" + "x" * 20, ALICE[:-1], ALICE + "x"):
        status, body = s.request("POST", "/jobs", request, token=token)
        assert status == 401 and "token" in body["error"], (token, body)
    conn = http.client.HTTPConnection(s.host, int(s.port), timeout=30)
    try:
        conn.request("GET", "/jobs", headers={"Authorization": f"Basic {ALICE}"})
        resp = conn.getresponse()
        assert resp.status == 401 and resp.getheader("WWW-Authenticate", "").startswith("Bearer")
        resp.read()
    finally:
        conn.close()
    for path in ("/jobs", "/jobs/1", "/jobs/1/log"):
        assert s.request("GET", path, token=None)[0] == 401
    status, health = s.request("GET", "/health", token=None)
    assert status == 200 and health["status"] == "ok" and health["workers"]["configured"] == 2
    assert len(s.all_jobs()) == before
    # Tokens never reach the queue, the logs or the output; their names do.
    queue = default_queue_path(str(s.root))
    files = [queue, *queue.parent.rglob("*"), s.out, s.err]
    text = b"".join(p.read_bytes() for p in files if p.is_file())
    assert ALICE.encode() not in text and BOB.encode() not in text
    assert b"alice" in text


# -- malformed requests ------------------------------------------------------------------
def test_malformed_requests_get_400_413_404_405(shared):
    s = shared
    before = len(s.all_jobs())
    good = {"backbone": bb("delta"), "dataset": str(s.d1)}
    cases = [
        (dict(raw=b"{not json"), "not valid JSON"),
        (dict(raw=b"[1, 2]"), "not an object"),
        (dict(body={**good, "bakcbone": "x"}), "Unknown option(s) ['bakcbone']"),
        (dict(body={**good, "root": "/elsewhere"}), "'root' cannot be set in a job"),
        (dict(body={**good, "force": True}), "'force' cannot be set in a job"),
        (dict(body={**good, "batch_size": 0}), "'batch_size' option of extract must be an int"),
        (dict(body={**good, "image_size": "big"}),
         "'image_size' option of extract must be an int in [1, 8192] or None"),
        (dict(body={**good, "dataset": str(s.folder / "no-such.npz")}), "does not exist in"),
        (dict(body={**good, "backbone": "no_such_module_xyz:make"}), "--allow-plugin"),
        (dict(body={**good, "backbone": "os:abort"}), "plugins run code on the server"),
        (dict(body={"dataset": str(s.d1)}), "'backbones' option must name at least one"),
    ]
    for kwargs, message in cases:
        status, body = s.request("POST", "/jobs", **kwargs)
        assert status == 400 and message in body["error"], (kwargs, body)
    # Too large: refused before it is parsed, with the limit in the message.
    big = json.dumps({**good, "splits": ["x" * 70_000]}).encode()
    status, body = s.request("POST", "/jobs", raw=big)
    assert status == 413 and "65536 bytes" in body["error"]
    assert s.request("GET", "/nothing-here")[0] == 404
    assert s.request("DELETE", "/jobs")[0] == 405
    assert s.request("GET", "/jobs/999999")[0] == 404
    assert s.request("GET", "/jobs/abc")[0] == 404
    status, body = s.request("GET", "/jobs?state=bogus")
    assert status == 400 and "queued, running, done, failed" in body["error"]
    assert len(s.all_jobs()) == before


# -- limits and a clean stop -------------------------------------------------------------
def test_queue_full_503_per_token_429_and_clean_stop(tmp_path, monkeypatch):
    # The service asks for a retry after 5 s; over the client's bound, so it does not
    # wait (test_client_retries_busy_answers_as_retry_after_says covers the waiting).
    monkeypatch.setattr(client, "MAX_RETRY_AFTER", 1.0)
    gate = tmp_path / "gate"
    gate.touch()  # forward passes wait while it exists: jobs stay running / queued
    s = Server(tmp_path / "s", "--max-queue", "3", "--max-per-token", "3", devices="cpu",
               env={"FEATSTORE_TEST_GATE": str(gate)})
    try:
        data = str(_npz(tmp_path / "d.npz", 40, 0))

        def submit(split: str, token: str = ALICE) -> tuple[int, Any]:
            return s.request("POST", "/jobs", {"backbone": bb("delta"), "dataset": data,
                                               "split": split}, token=token)

        status, body = submit("s1")
        assert status == 202
        first = body["jobs"][0]["id"]
        deadline = time.time() + 60
        while s.job(first)["state"] != "running":
            assert time.time() < deadline
            time.sleep(0.1)
        assert submit("s2")[0] == 202 and submit("s3")[0] == 202  # alice: 1 running, 2 queued
        status, body = submit("s4")
        assert status == 429, body
        assert "'alice'" in body["error"] and "at most 3" in body["error"]
        assert submit("s5", BOB)[0] == 202  # 3 queued now
        status, body = submit("s6", BOB)
        assert status == 503 and body["error"] == "queue full (3 jobs queued); retry later"
        with pytest.raises(ServiceBusyError, match=r"queue full \(3 jobs queued\)"):
            client.submit(s.url, {"backbone": bb("delta"), "dataset": data, "split": "s7"},
                          token=BOB)
        jobs = s.all_jobs()
        assert [j["split"] for j in jobs] == ["s1", "s2", "s3", "s5"]
        assert [j["submitted_by"] for j in jobs] == ["alice", "alice", "alice", "bob"]

        # Stop while a job is running: a clean exit, the job back in the queue with its
        # attempt not counted.
        assert s.stop() == 0, s.err.read_text()
        assert "Service stopped." in s.out.read_text()
        queue = JobQueue(default_queue_path(str(s.root)))
        job = queue.get(first)
        assert job["state"] == "queued" and job["attempts"] == 0, job
        assert "stopped (SIGTERM) before the job finished" in queue.log_path(first).read_text()
    finally:
        gate.unlink(missing_ok=True)
        s.close()


# -- kill -9 a worker mid-job --------------------------------------------------------------
@pytest.mark.slow
def test_kill_9_worker_mid_job_another_worker_finishes_it(tmp_path, runner):
    # 160 samples, 10 chunks of 16 rows, 20 forward passes of 0.2 s: ~4 s of work; the
    # first progress report comes after lease/3 = 1 s.
    s = Server(tmp_path / "s", env={"FEATSTORE_TEST_SLOW": "0.2"})
    try:
        data = _npz(tmp_path / "d.npz", 160, 3)
        options = {"backbone": bb("slow"), "dataset": str(data), "chunk_rows": 16,
                   "batch_size": 8}
        status, body = s.request("POST", "/jobs", options)
        assert status == 202
        job_id = body["jobs"][0]["id"]
        deadline = time.time() + 90
        while True:
            job = s.job(job_id)
            assert job["state"] in ("queued", "running") and time.time() < deadline, job
            if job["state"] == "running" and (job["progress"] or {}).get("chunks_done", 0) >= 1:
                break
            time.sleep(0.1)
        victim, committed = job["worker_pid"], job["progress"]["chunks_done"]
        assert victim in s.worker_pids and committed < 10
        os.kill(victim, signal.SIGKILL)

        final = s.wait([job_id], timeout=150)[0]
        assert final["state"] == "done", final
        assert final["attempts"] == 2 and final["worker_pid"] != victim
        result = final["result"]
        assert result["resumed_chunks"] >= committed >= 1
        assert result["resumed_chunks"] + result["computed_chunks"] == 10
        status, body = s.request("GET", f"/jobs/{job_id}/log")
        log = body["log"]
        assert f"(pid {victim}) died (was killed by signal 9)" in log
        assert "attempt 2 of 3" in log and "resumed from" in log
        assert "killed by signal 9" in s.err.read_text()
    finally:
        s.stop()

    res = runner.invoke(cli, ["verify", final["path"]])
    assert res.exit_code == 0 and res.output.startswith("OK"), res.output
    # The same bytes as one uninterrupted `featstore extract` into another root.
    res = runner.invoke(cli, ["extract", "--backbone", bb("slow"), "--dataset", str(data),
                              "--root", str(tmp_path / "direct"), "--chunk-rows", "16",
                              "--batch-size", "8", "--no-progress", "--json"])
    assert res.exit_code == 0, res.output
    direct = json.loads(res.stdout)[0]
    assert direct["key"] == final["key"]
    with open_store(final["path"]) as got, open_store(direct["path"]) as want:
        assert got.load_features().tobytes() == want.load_features().tobytes()
        assert got.valid.all()


# -- clients -----------------------------------------------------------------------------
def test_cli_submit_wait_and_jobs(shared, runner):
    s = shared
    env = {"FEATSTORE_TOKEN": ALICE, "FEATSTORE_SERVER": s.url}
    args = ["submit", "-b", bb("delta"), "-d", str(s.d1), "-s", "cli", "--chunk-rows", "32"]
    res = runner.invoke(cli, [*args, "--wait", "--poll", "0.2"], env=env)
    assert res.exit_code == 0, res.output
    queued = re.search(r"^queued +job (\d+) +service_backbones:delta d1\.npz/cli$", res.stdout,
                       re.M)
    done = re.search(r"^done +([0-9a-f]{24}) +service_backbones:delta d1\.npz/cli -> (\S+)$",
                     res.stdout, re.M)
    assert queued and done, res.output
    job_id, key, path = int(queued.group(1)), done.group(1), done.group(2)
    assert Path(path).name.startswith(key) and Path(path).exists()

    res = runner.invoke(cli, [*args, "--json"], env=env)
    assert res.exit_code == 0, res.output
    [hit] = json.loads(res.stdout)
    assert (hit["status"], hit["key"], hit["path"], hit["id"]) == ("cached", key, path, job_id)
    res = runner.invoke(cli, [*args], env=env)
    assert re.match(rf"^cached +{key} +service_backbones:delta d1\.npz/cli -> {re.escape(path)}$",
                    res.stdout), res.output
    res = runner.invoke(cli, [*args, "--wait", "--json"], env=env)
    [hit] = json.loads(res.stdout)
    assert (hit["status"], hit["state"], hit["key"]) == ("cached", "done", key)
    assert hit["result"]["shape"] == [150, 8] and hit["attempts"] == 1

    res = runner.invoke(cli, ["jobs"], env=env)
    assert res.exit_code == 0, res.output
    header = res.stdout.splitlines()[0].split()
    assert header == ["id", "state", "backbone", "dataset/split", "progress", "attempts",
                      "worker", "key", "error"]
    row = next(ln.split() for ln in res.stdout.splitlines() if ln.startswith(f"{job_id} "))
    assert row[1:6] == ["done", bb("delta"), "d1.npz/cli", "5/5", "1/2"]
    assert row[6] in ("w0-cpu", "w1-cpu") and row[7] == key

    res = runner.invoke(cli, ["jobs", "--state", "done", "--json"], env=env)
    listed = json.loads(res.stdout)
    assert {j["state"] for j in listed} == {"done"} and job_id in {j["id"] for j in listed}
    res = runner.invoke(cli, ["jobs", "--log", str(job_id)], env=env)
    assert res.exit_code == 0
    assert "queued by alice" in res.stdout and "attempt 1 of 2 on worker" in res.stdout
    assert f"done: {key}" in res.stdout

    # A job that keeps failing: retried, then failed; --wait exits 1 with the reason.
    res = runner.invoke(cli, ["submit", "-b", bb("broken"), "-d", str(s.d1), "-s", "cli",
                              "--wait", "--poll", "0.2"], env=env)
    assert res.exit_code == 1, res.output
    # Clients learn the error's class and what failed; its message (which may quote the
    # data) stays in the worker's log, on the server.
    assert "failed after 2 attempt(s)" in res.output and "RuntimeError while extracting" \
        in res.output and "broken on purpose" not in res.output
    assert "broken on purpose" in "".join(p.read_text() for p in s.root.rglob("worker-*.log"))
    failed_id = int(re.search(r"job (\d+) \(service_backbones:broken", res.output).group(1))
    res = runner.invoke(cli, ["jobs", "--state", "failed"], env=env)
    assert re.search(rf"^{failed_id} +failed +.*RuntimeError while extracting", res.stdout,
                     re.M), res.output
    res = runner.invoke(cli, ["jobs", "--log", str(failed_id)], env=env)
    assert "Traceback" in res.stdout and "queued again for another attempt" in res.stdout

    # An error of the job's data: a retry would meet it again, so no second attempt.
    notes = s.folder / "notes.txt"
    notes.write_text("not a data set\n")
    res = runner.invoke(cli, ["submit", "-b", bb("delta"), "-d", str(notes), "--wait",
                              "--poll", "0.2"], env=env)
    assert res.exit_code == 1 and "failed after 1 attempt(s)" in res.output, res.output

    # Errors a user can act on.
    res = runner.invoke(cli, ["jobs"], env={**env, "FEATSTORE_TOKEN": "nope-" + "x" * 20})
    assert res.exit_code == 1 and "Set FEATSTORE_TOKEN" in res.output
    res = runner.invoke(cli, ["jobs", "--server", f"http://127.0.0.1:{free_port()}"], env=env)
    assert res.exit_code == 1 and "No featstore service is running" in res.output
    assert "featstore serve" in res.output
    res = runner.invoke(cli, ["jobs"], env={**env, "FEATSTORE_SERVER": None})
    assert res.exit_code == 1 and "--server" in res.output


def test_client_function_for_extract_server(shared, monkeypatch):
    """What `featstore extract --server URL` calls: extract's options, as they are."""
    s = shared
    monkeypatch.chdir(s.folder)  # a relative data set path is made absolute by the client
    options = {"backbones": [bb("delta")], "datasets": ["d2.npz"], "splits": ["fn"],
               "root": "features", "device": "auto", "progress": True, "chunk_rows": 32,
               "limit": None, "weights": None}
    jobs = client.submit(s.url, options, token=ALICE, wait=True, poll=0.2)
    assert [(j["state"], j["status"], j["dataset"]) for j in jobs] == [
        ("done", "queued", str(s.d2))]
    assert Path(jobs[0]["path"]).exists() and jobs[0]["path"].startswith(str(s.root))
    [hit] = client.submit(s.url, options, token=ALICE, wait=True)
    assert hit["status"] == "cached" and hit["key"] == jobs[0]["key"]
    assert hit["result"]["shape"] == [120, 8]  # with wait=True, the full job view
    with pytest.raises(AuthenticationError, match="FEATSTORE_TOKEN"):
        client.submit(s.url, options, token=None)
    with pytest.raises(ConfigError, match="bakcbone"):
        client.submit(s.url, {**options, "bakcbone": "x"}, token=ALICE)
    with pytest.raises(ServiceUnavailableError, match="No featstore service is running"):
        client.submit(f"127.0.0.1:{free_port()}", options, token=ALICE)


class ScriptedService:
    """A stand-in for a busy service on 127.0.0.1: answers ``plan`` in order (status,
    Retry-After or None), then 200 ``{"status": "ok"}``; counts the requests."""

    def __init__(self, plan: list[tuple[int, str | None]]):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.plan, self.requests = list(plan), 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests += 1
                status, after = outer.plan.pop(0) if outer.plan else (200, None)
                body = json.dumps({"status": "ok"} if status == 200 else
                                  {"error": f"busy {status}"}).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if after is not None:
                    self.send_header("Retry-After", after)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> "ScriptedService":
        import threading

        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_client_retries_busy_answers_as_retry_after_says():
    # 503 and 429 with a short Retry-After: waited for, then the answer.
    with ScriptedService([(503, "0"), (429, "1")]) as srv:
        t0 = time.monotonic()
        assert client.health(srv.url) == {"status": "ok"}
        assert srv.requests == 3 and time.monotonic() - t0 >= 1.0
    # A Retry-After longer than the client's bound: not waited for, the error at once.
    with ScriptedService([(503, "600")]) as srv:
        t0 = time.monotonic()
        with pytest.raises(ServiceBusyError, match="is busy: busy 503"):
            client.health(srv.url)
        assert srv.requests == 1 and time.monotonic() - t0 < 5
    # A proxy's 502 without Retry-After: backoff, and at most RETRIES retries.
    with ScriptedService([(502, None)] * 5) as srv:
        with pytest.raises(client.ServiceError, match="answered 502: busy 502"):
            client.health(srv.url)
        assert srv.requests == 1 + client.RETRIES


def test_openapi_schema_describes_the_api(shared):
    status, schema = shared.request("GET", "/openapi.json", token=None)
    assert status == 200 and schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert set(paths) == {"/health", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/log"}
    assert set(paths["/jobs"]) == {"get", "post"}
    assert paths["/jobs"]["post"]["security"] == [{"bearer": []}]
    assert "security" not in paths["/health"]["get"]
    assert {"401", "403", "408", "411", "413", "429", "503"} <= {
        str(code) for code in paths["/jobs"]["post"]["responses"]}
    # The job request is ExtractConfig's options, with this service's bounds.
    request = schema["components"]["schemas"]["JobRequest"]["properties"]
    assert "root" not in request and "force" not in request and "backbones" in request
    assert request["image_size"] == {"type": "integer", "nullable": True, "default": None,
                                     "minimum": 1, "maximum": 1024}
    assert request["batch_size"]["maximum"] == 1024 and request["seed"]["minimum"] == 0


def test_extract_server_sends_the_work_to_the_service(shared, runner):
    s = shared
    args = ["extract", "-b", bb("delta"), "-d", str(s.d2), "-s", "via-extract",
            "--chunk-rows", "32", "--server", s.url]
    res = runner.invoke(cli, args, env={"FEATSTORE_TOKEN": ALICE})
    assert res.exit_code == 0, res.output
    done = re.match(r"^extracted service_backbones:delta \S*d2\.npz/via-extract -> (\S+) 120x8 "
                    r"\(job \d+ on http://127\.0\.0\.1:\d+\)$", res.stdout)
    assert done, res.output
    path = done.group(1)
    assert path.startswith(str(s.root))
    with open_store(path) as fs:
        assert fs.verify().ok
    res = runner.invoke(cli, args, env={"FEATSTORE_TOKEN": ALICE})
    assert res.stdout.startswith("cached ") and path in res.stdout, res.output
    res = runner.invoke(cli, [*args, "--force"], env={"FEATSTORE_TOKEN": ALICE})
    assert res.exit_code == 1 and "--force cannot be sent to a service" in res.output
    res = runner.invoke(cli, args, env={"FEATSTORE_TOKEN": "wrong-" + "z" * 20})
    assert res.exit_code == 1 and "FEATSTORE_TOKEN" in res.output


# -- units: tokens, request keys, the queue ----------------------------------------------
def test_tokens_file_and_env(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text(f"# comment\n\nalice:{ALICE}\n")
    tokens = load_tokens(path, environ={"FEATSTORE_SERVICE_TOKENS": f"bob:{BOB}"})
    assert tokens.names == ["alice", "bob"] and ALICE not in repr(tokens)
    assert tokens.identify(f"Bearer {ALICE}") == "alice"
    assert tokens.identify(f"bearer  {BOB} ") == "bob"
    for header in (None, "", ALICE, f"Basic {ALICE}", "Bearer ", f"Bearer {ALICE}x"):
        assert tokens.identify(header) is None
    with pytest.raises(ConfigError, match="at least one token"):
        load_tokens(None, environ={})
    path.write_text("alice:short\n")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        load_tokens(path, environ={})
    path.write_text(f"no separator {ALICE}\n")
    with pytest.raises(ConfigError, match="entry 1: expected 'name:token'") as err:
        load_tokens(path, environ={})
    assert ALICE not in str(err.value)
    with pytest.raises(ConfigError, match="unique"):
        load_tokens(None, environ={"FEATSTORE_SERVICE_TOKENS": f"a:{ALICE},a:{BOB}"})
    assert TokenSet([]).identify(f"Bearer {ALICE}") is None


def test_request_keys_follow_the_values(tmp_path):
    data = _npz(tmp_path / "d.npz", 30, 0)
    root = str(tmp_path / "root")

    dirs = DataDirs.resolve([str(tmp_path)])

    def key(**options: Any) -> str:
        base = {"backbone": bb("delta"), "dataset": str(data)}
        [job] = expand({**base, **options}, root, cwd=tmp_path, allow_plugins=PLUGINS,
                       data_dirs=dirs)
        return job.request_key

    plain = key()
    # What does not change the values does not change the key.
    assert key(batch_size=3, num_workers=0, chunk_rows=7, codec="lz4", strict=True) == plain
    assert key(dataset="d.npz") == plain  # relative to the server's folder
    assert key(seed=5) == plain           # no --limit, no augmentation: the seed is unused
    # What does, does.
    others = [key(dtype="float32"), key(limit=10), key(limit=10, seed=5), key(split="test"),
              key(format="hdf5"), key(pretrained=False), key(image_size=8),
              key(backbone=bb("beta"))]
    assert len({plain, *others}) == len(others) + 1
    os.utime(data, ns=(0, 10**18))  # the data file changed
    assert key() != plain
    jobs = expand({"backbones": [bb("alpha"), bb("beta"), bb("alpha")], "datasets": [str(data)],
                   "splits": ["a", "b", "c", "a"]}, root, cwd=tmp_path, allow_plugins=PLUGINS,
                  data_dirs=dirs)
    assert [(j.backbone, j.split) for j in jobs] == [  # repeats count once
        (bb(b), s) for b in ("alpha", "beta") for s in ("a", "b", "c")]
    assert len({j.backbone_group for j in jobs}) == 2
    assert jobs[0].config["datasets"] == [str(data)] and "root" not in jobs[0].config


def test_requests_are_bounded_and_plugins_must_be_allowed(tmp_path):
    data = _npz(tmp_path / "d.npz", 30, 0)
    root = str(tmp_path / "root")
    dirs = DataDirs.resolve([str(tmp_path)])
    many = {"backbones": [bb("alpha"), bb("beta")], "datasets": [str(data)],
            "splits": [f"s{i}" for i in range(60)]}
    with pytest.raises(ConfigError, match="would make 120 jobs.*at most 100 per request"):
        expand(many, root, cwd=tmp_path, allow_plugins=PLUGINS, data_dirs=dirs)
    # A 20 x 20 x 20 request of one repeated job is one job, not 8,000.
    same = {"backbones": [bb("alpha")] * 20, "datasets": [str(data)] * 20, "splits": ["a"] * 20}
    assert len(expand(same, root, cwd=tmp_path, allow_plugins=PLUGINS, data_dirs=dirs)) == 1
    with pytest.raises(ConfigError, match="plugins run code on the server.*--allow-plugin os"):
        expand({"backbone": "os:abort", "dataset": str(data)}, root, cwd=tmp_path)
    with pytest.raises(ConfigError, match="allows plugins from: none"):
        expand({"backbone": bb("alpha"), "dataset": str(data)}, root, cwd=tmp_path)


def _request(group: str, n: int) -> JobRequest:
    return JobRequest(config={"backbones": [group]}, request_key=f"{group}-{n}",
                      backbone_group=group, backbone=group, dataset="d", split=str(n))


def test_queue_groups_by_backbone_and_requeues_expired_leases(tmp_path):
    queue = JobQueue(tmp_path / "q.sqlite")
    queue.init("/some/root")
    reqs = [_request("A", 0), _request("B", 1), _request("B", 2), _request("C", 3),
            _request("B", 4), _request("A", 5)]
    answers = queue.submit(reqs, submitted_by="alice", max_attempts=2, max_queue=10,
                           max_per_token=10)
    ids = [a["id"] for a in answers]
    assert queue.claim("w0", 1, "cpu", 30, prefer=[])["id"] == ids[1]        # B: most queued
    assert queue.claim("w1", 2, "cpu", 30, prefer=["C", "A"])["id"] == ids[3]  # what w1 holds
    assert queue.claim("w0", 1, "cpu", 30, prefer=["B"])["id"] == ids[2]
    # A worker whose lease runs out loses its job; at the last attempt the job fails.
    job = queue.claim("w1", 2, "cpu", 0.01, prefer=["A"])
    assert job["id"] == ids[0]
    time.sleep(0.05)
    assert queue.expire_leases() == [ids[0]]
    assert queue.get(ids[0])["state"] == "queued"
    assert "stopped renewing its lease" in queue.get(ids[0])["last_error"]
    job = queue.claim("w1", 2, "cpu", 0.01, prefer=["A"])
    assert job["id"] == ids[0] and job["attempts"] == 2
    time.sleep(0.05)
    assert queue.heartbeat(ids[0], job["lease_owner"], 30) is True
    assert sorted(queue.abandon(2, "died (was killed by signal 9)")) == [ids[0], ids[3]]
    assert queue.get(ids[3])["state"] == "queued"  # attempts left: back in the queue
    failed = queue.get(ids[0])
    assert failed["state"] == "failed" and "killed by signal 9" in failed["error"]
    assert queue.heartbeat(ids[0], job["lease_owner"], 30) is False
    # A queue belongs to one root.
    with pytest.raises(ConfigError, match="belongs to the root /some/root"):
        queue.init("/another/root")
    assert default_queue_path("s3://bucket/features").name.startswith("queue-")
    assert default_queue_path(str(tmp_path)) == tmp_path / ".featstore" / "queue.sqlite"


def test_requests_cannot_set_what_costs_the_operator(tmp_path):
    """compile, threads and the embedding API's rate limit and timeout are the server's;
    API concurrency, texts per request and retries are bounded (serve --limits)."""
    from featstore.workflows.service.requests import parse_limits

    data = _npz(tmp_path / "d.npz", 30, 0)
    root = str(tmp_path / "root")
    dirs = DataDirs.resolve([str(tmp_path)])
    base = {"backbone": bb("delta"), "dataset": str(data)}
    for name, value in (("compile", True), ("threads", 64), ("requests_per_minute", None),
                        ("request_timeout", 1e300)):
        with pytest.raises(ConfigError, match=name):
            expand({**base, name: value}, root, cwd=tmp_path, allow_plugins=PLUGINS,
                   data_dirs=dirs)
    for name, value in (("concurrency", 1024), ("texts_per_request", 65536),
                        ("max_retries", 100)):
        with pytest.raises(ConfigError, match=name):
            expand({**base, name: value}, root, cwd=tmp_path, allow_plugins=PLUGINS,
                   data_dirs=dirs, limits=parse_limits([]))
    assert parse_limits(["concurrency=2"])["concurrency"] == 2
