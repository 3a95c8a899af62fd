"""Remote roots, copy, pack/unpack and concurrent writers — against a real S3 server
(moto's, on 127.0.0.1) and the local file system."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from featstore.errors import StoreCorruptError, StoreIncompleteError
from featstore.store import Root, location, open_store
from featstore.store.lease import Lease, LeaseLostError
from featstore_cli.main import cli

from helpers import S3_TEST_SECRET
from sharing_backbone import calls

TESTS = Path(__file__).parent
WORDS = "apple banana cherry date elder fig grape hazel iris juniper kale lemon".split()


@pytest.fixture
def texts(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    rows = [" ".join(rng.choice(WORDS, size=rng.integers(1, 6))) for _ in range(200)]
    path = tmp_path / "texts.csv"
    path.write_text("text,label\n" + "".join(f"{t},{i % 2}\n" for i, t in enumerate(rows)))
    return path


def extract_args(data: Path, root: str, *extra: str) -> list[str]:
    return ["extract", "--backbone", "sharing_backbone:make", "--dataset", str(data),
            "--root", str(root), "--chunk-rows", "20", "--batch-size", "10", "--no-progress",
            "--json", *extra]


@pytest.fixture
def plugin_env(tmp_path, monkeypatch) -> dict[str, str]:
    """The counting backbone importable here and in subprocesses; its calls file."""
    monkeypatch.syspath_prepend(str(TESTS))
    env = {"PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "FEATSTORE_TEST_CALLS": str(tmp_path / "calls.txt")}
    monkeypatch.setenv("FEATSTORE_TEST_CALLS", env["FEATSTORE_TEST_CALLS"])
    return env


def files_of(root: str) -> dict[str, str]:
    """Relative path -> sha256 of every file under a root (lease folders aside)."""
    fs, base = location.fs_and_path(root)
    out = {}
    for name in fs.find(base):
        rel = name[len(base.rstrip("/")) + 1:]
        if not rel.startswith(".leases"):
            out[rel] = hashlib.sha256(fs.cat_file(name)).hexdigest()
    return out


def run_cli(runner, args):
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    return res


# -- remote roots ---------------------------------------------------------------------
def test_extract_into_s3_root_reads_lazily_and_keeps_no_secret(runner, texts, plugin_env, s3_root,
                                                               tmp_path):
    out = json.loads(run_cli(runner, extract_args(texts, s3_root)).stdout)[0]
    assert out["path"].startswith("s3://") and not out["cached"]
    again = json.loads(run_cli(runner, extract_args(texts, s3_root)).stdout)[0]
    assert again["cached"] and again["key"] == out["key"]
    local = json.loads(run_cli(runner, extract_args(texts, str(tmp_path / "local"))).stdout)[0]
    assert local["key"] == out["key"]  # where it is stored does not change what it is

    listed = json.loads(run_cli(runner, ["ls", s3_root, "--json"]).stdout)
    assert [(r["key"], r["n_samples"], r["n_features"], r["complete"]) for r in listed] == \
        [(out["key"], 200, 4, True)]
    assert "OK" in run_cli(runner, ["verify", f"{s3_root}/{out['key'][:8]}"]).stdout
    with open_store(out["path"]) as remote, open_store(local["path"]) as here:
        assert np.array_equal(remote.features[40:60], here.features[40:60])  # one chunk
        assert np.array_equal(remote.load_features(), here.load_features())
    # Credentials are read from the environment and never written anywhere.
    assert all(S3_TEST_SECRET not in json.dumps(r) for r in listed)
    for name, digest in files_of(s3_root).items():
        assert S3_TEST_SECRET.encode() not in location.join(s3_root, name).read_bytes()


def test_remote_reads_fetch_only_the_chunks_needed(runner, texts, plugin_env, s3_root,
                                                   monkeypatch):
    import s3fs

    out = json.loads(run_cli(runner, extract_args(texts, s3_root)).stdout)[0]
    fetched: list[str] = []
    real = s3fs.S3FileSystem._cat_file

    async def counting(self, path, *args, **kwargs):
        fetched.append(path)
        return await real(self, path, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_cat_file", counting)
    with open_store(out["path"]) as fs:
        fetched.clear()
        rows = fs.features[45:55]  # inside chunk 2 (rows 40-59)
    assert rows.shape == (10, 4)
    chunks = sorted(p.split(".zarr/")[1] for p in fetched if "/features/c/" in p)
    assert chunks == ["features/c/2/0"]


def test_hdf5_on_a_remote_root_is_explained(runner, texts, plugin_env, s3_root):
    res = runner.invoke(cli, extract_args(texts, s3_root, "--format", "hdf5"))
    assert res.exit_code == 1
    assert "HDF5 stores are written on a local or shared file system only" in res.output
    assert "--format zarr" in res.output


def test_ls_filters_and_json(runner, texts, plugin_env, tmp_path):
    root = str(tmp_path / "r")
    a = json.loads(run_cli(runner, extract_args(texts, root)).stdout)[0]
    b = json.loads(run_cli(runner, extract_args(texts, root, "--limit", "50")).stdout)[0]
    rows = json.loads(run_cli(runner, ["ls", root, "--json"]).stdout)
    assert {r["key"] for r in rows} == {a["key"], b["key"]}
    for col in ("backbone", "dataset", "split", "n_samples", "n_features", "dtype", "size_bytes",
                "created_at", "created_by"):
        assert all(r[col] is not None for r in rows), col
    only = json.loads(run_cli(runner, ["ls", root, "--prefix", b["key"][:6], "--json"]).stdout)
    assert [r["key"] for r in only] == [b["key"]]
    assert json.loads(run_cli(runner, ["ls", root, "--backbone", "nope", "--json"]).stdout) == []
    assert len(json.loads(run_cli(runner, ["ls", root, "--dataset", "texts", "--json"]).stdout)) == 2
    table = run_cli(runner, ["ls", root]).stdout
    assert "200x4" in table and "50x4" in table and "float16" in table


# -- copy ----------------------------------------------------------------------------
def test_copy_to_s3_and_back_is_byte_identical_and_verified(runner, texts, plugin_env, s3_root,
                                                            tmp_path):
    src = str(tmp_path / "src")
    run_cli(runner, extract_args(texts, src))
    run_cli(runner, extract_args(texts, src, "--limit", "30", "--format", "hdf5"))
    dry = json.loads(run_cli(runner, ["copy", src, s3_root, "--dry-run", "--json"]).stdout)
    assert {r["status"] for r in dry} == {"would copy"}
    assert not location.as_path(s3_root).exists()  # a dry run moves nothing

    pushed = json.loads(run_cli(runner, ["copy", src, s3_root, "--json"]).stdout)
    assert {r["status"] for r in pushed} == {"copied"} and all(r["verified"] for r in pushed)
    back = str(tmp_path / "back")
    pulled = json.loads(run_cli(runner, ["copy", s3_root, back, "--json"]).stdout)
    assert {r["status"] for r in pulled} == {"copied"}
    assert files_of(src) == files_of(s3_root) == files_of(back)
    for e in Root(back):
        assert e.complete
        with open_store(e.path) as fs:
            assert fs.verify().ok
    again = json.loads(run_cli(runner, ["copy", src, s3_root, "--json"]).stdout)
    assert {r["status"] for r in again} == {"up to date"}


def test_interrupted_copy_never_reads_complete_and_resumes(runner, texts, plugin_env, s3_root,
                                                           tmp_path, monkeypatch):
    src = str(tmp_path / "src")
    key = json.loads(run_cli(runner, extract_args(texts, src)).stdout)[0]["key"]
    n_files = len(files_of(src))
    real_put, calls_made = location.put_atomic, []

    def failing_put(path, data):
        if len(calls_made) == 25 and ".leases" not in str(path):
            raise KeyboardInterrupt  # the user pressed Ctrl-C, or the network went away
        if ".leases" not in str(path):
            calls_made.append(path)
        real_put(path, data)

    from featstore.workflows.sharing import copy_root

    monkeypatch.setattr(location, "put_atomic", failing_put)
    with pytest.raises(KeyboardInterrupt):
        copy_root(src, s3_root, progress=False)
    monkeypatch.setattr(location, "put_atomic", real_put)
    assert Root(s3_root).entries() == []  # the partial copy is not a feature set yet
    with pytest.raises(Exception):
        open_store(location.join(s3_root, f"{key}.zarr"))

    (result,) = copy_root(src, s3_root, progress=False)
    assert result.status == "copied" and result.verified
    # Chunk files already there are not sent again (the small others always are).
    kept = [p for p in calls_made if "/features/c/" in str(p) or "/valid/c/" in str(p)]
    assert kept and result.files_copied == n_files - len(kept)
    assert files_of(src) == files_of(s3_root)


def test_copy_refuses_to_mark_a_damaged_set_complete(runner, texts, plugin_env, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    out = json.loads(run_cli(runner, extract_args(texts, str(src))).stdout)[0]
    # Damage one chunk at the source after its checksum was recorded.
    import zarr

    zarr.open_group(out["path"], mode="r+")["features"][0:20] = 7.0
    res = runner.invoke(cli, ["copy", str(src), str(dst)])
    assert res.exit_code == 1 and "do not match the checksums recorded" in res.output
    assert "Run `featstore verify` on the source" in res.output
    assert not any(e.complete for e in Root(dst))
    with pytest.raises((StoreIncompleteError, FileNotFoundError)):
        open_store(dst / Path(out["path"]).name)


def test_copy_replaces_a_damaged_destination(runner, texts, plugin_env, tmp_path):
    """A destination set that reads as complete but lost a chunk file is copied again,
    not called up to date (and copy never fails on it)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    out = json.loads(run_cli(runner, extract_args(texts, str(src))).stdout)[0]
    run_cli(runner, ["copy", str(src), str(dst)])
    name = Path(out["path"]).name
    (dst / name / "features" / "c" / "1" / "0").unlink()
    with pytest.raises(StoreCorruptError, match="featstore verify"):
        open_store(dst / name)
    res = run_cli(runner, ["copy", str(src), str(dst)])
    assert "up to date" not in res.stdout
    assert files_of(str(src)) == files_of(str(dst))
    with open_store(dst / name) as fs:
        assert fs.verify().ok


# -- pack / unpack -------------------------------------------------------------------
def test_pack_unpack_round_trip(runner, texts, plugin_env, tmp_path, s3_root):
    src = str(tmp_path / "src")
    run_cli(runner, extract_args(texts, src))
    run_cli(runner, extract_args(texts, src, "--limit", "30", "--format", "hdf5"))
    zip_path = tmp_path / "sets.zip"
    run_cli(runner, ["pack", src, str(zip_path)])
    out = run_cli(runner, ["unpack", str(zip_path), str(tmp_path / "dst")]).stdout
    assert out.count("unpacked") == 2
    assert files_of(src) == files_of(str(tmp_path / "dst"))
    assert run_cli(runner, ["unpack", str(zip_path), str(tmp_path / "dst")]).stdout.count("present") == 2
    run_cli(runner, ["unpack", str(zip_path), s3_root])
    assert files_of(src) == files_of(s3_root)


def _zip_with(path: Path, name: str, data: bytes = b"x", mode: int | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo(name)
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
        zf.writestr("featstore-pack.json", json.dumps(
            {"format": "featstore-pack", "version": 1, "sets": [], "files": {name: ""}}))
    return path


@pytest.mark.parametrize("name,mode,says", [
    ("/etc/evil", None, "absolute path"),
    ("0123456789abcdef.zarr/../../evil", None, "'..'"),
    ("0123456789abcdef.zarr/link", stat.S_IFLNK | 0o777, "symbolic link"),
    ("notes.txt", None, "not part of a feature set"),
])
def test_unpack_refuses_unsafe_members(runner, tmp_path, name, mode, says):
    bad = _zip_with(tmp_path / "bad.zip", name, b"/etc/passwd", mode)
    root = tmp_path / "root"
    res = runner.invoke(cli, ["unpack", str(bad), str(root)])
    assert res.exit_code == 1 and says in res.output, res.output
    assert not root.exists() and not (tmp_path / "evil").exists()


def test_unpack_refuses_a_tampered_pack(runner, texts, plugin_env, tmp_path):
    src = str(tmp_path / "src")
    run_cli(runner, extract_args(texts, src))
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    run_cli(runner, ["pack", src, str(good)])
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("features/c/0/0"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            zout.writestr(info, data)
    res = runner.invoke(cli, ["unpack", str(bad), str(tmp_path / "dst")])
    assert res.exit_code == 1 and "does not match its sha256" in res.output
    assert Root(tmp_path / "dst").entries() == []


# -- leases and concurrent writers -----------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def any_root(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_root")


def acquire_within(lease: Lease, timeout: float) -> float:
    """Poll ``lease.acquire()``; the seconds it took (fails the test after ``timeout``)."""
    t0 = time.monotonic()
    while not lease.acquire():
        assert time.monotonic() - t0 < timeout, "lease never acquired"
        time.sleep(0.05)
    return time.monotonic() - t0


def test_lease_excludes_expires_and_is_taken_over(any_root):
    a = Lease(any_root, "k" * 24, seconds=0.6)
    b = Lease(any_root, "k" * 24, seconds=0.6)
    assert a.acquire()
    assert not b.acquire()                       # live: b must wait
    assert b.holder().pid == os.getpid()
    a.renew()                                    # ... then a stops renewing
    took = acquire_within(b, 10)                 # b's own clock: unrenewed for 0.6 s
    assert took >= 0.6 and b.generation == 2
    with pytest.raises(LeaseLostError):
        a.renew()                                # a learns it lost the lease
    with pytest.raises(LeaseLostError):
        a.check()                                # and stops before its next chunk
    b.release()
    c = Lease(any_root, "k" * 24, seconds=5)
    assert c.acquire()                           # a released lease is free at once
    c.release(remove=True)
    assert c.holder() is None


def test_a_holder_that_cannot_renew_stops_by_itself(any_root):
    a = Lease(any_root, "c" * 24, seconds=0.3)
    assert a.acquire()
    a.check()
    time.sleep(0.4)  # no heartbeat ran (storage errors, a stall)
    with pytest.raises(LeaseLostError, match="not renewed"):
        a.check()


def test_clock_skew_never_makes_a_live_lease_look_expired(any_root, monkeypatch):
    import featstore.store.lease as lease_module

    a = Lease(any_root, "w" * 24, seconds=0.6)
    assert a.acquire()
    a.start_heartbeat()
    try:
        b = Lease(any_root, "w" * 24, seconds=0.6)
        real = time.time
        monkeypatch.setattr(lease_module.time, "time", lambda: real() + 3600)  # b's clock
        deadline = time.monotonic() + 2.5  # four lease periods
        while time.monotonic() < deadline:
            assert not b.acquire()
            time.sleep(0.1)
    finally:
        a.release(remove=True)


def test_racing_acquirers_one_wins(any_root):
    from concurrent.futures import ThreadPoolExecutor

    leases = [Lease(any_root, "r" * 24, seconds=30) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda lease: lease.acquire(), leases))
    assert won.count(True) == 1


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """`featstore ARGS` in a new process, with this environment plus ``env``."""
    return subprocess.Popen([sys.executable, "-m", "featstore_cli.main", *args],
                            env={**os.environ, **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_processes_extracting_one_key_compute_it_once(texts, plugin_env, any_root, tmp_path):
    env = {**plugin_env, "FEATSTORE_TEST_DELAY": "0.3"}  # 20 batches: ~6 s of "compute"
    procs = [_spawn(extract_args(texts, any_root), env) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    results = [json.loads(o)[0] for o, _ in outs]
    assert results[0]["key"] == results[1]["key"]
    assert sorted(r["cached"] for r in results) == [False, True]
    waiter = next(i for i, r in enumerate(results) if r["cached"])
    assert "is being extracted by" in outs[waiter][1] and results[waiter]["waited_seconds"] > 0
    counted = calls(plugin_env["FEATSTORE_TEST_CALLS"])
    assert counted["forward"] == 200 and len(counted["forward_pids"]) == 1  # one computation
    with open_store(results[0]["path"]) as fs:
        assert fs.verify().ok and fs.n_samples == 200


@pytest.mark.slow
def test_dead_writers_lease_is_taken_over_and_resumed(texts, plugin_env, any_root, tmp_path):
    env = {**plugin_env, "FEATSTORE_TEST_DELAY": "0.3"}
    args = extract_args(texts, any_root, "--lease-seconds", "2")
    victim = _spawn(args, env)
    key_path = None
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until it has committed a few chunks
        entries = [e for e in Root(any_root)] if location.as_path(any_root).exists() else []
        if entries:
            key_path = entries[0].path
            with open_store(key_path, allow_incomplete=True) as fs:
                if len(fs.committed_chunks()) >= 3:
                    break
        time.sleep(0.2)
    assert key_path is not None
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    with open_store(key_path, allow_incomplete=True) as fs:
        done_before = len(fs.committed_chunks())
        assert not fs.complete

    heir = _spawn(args, {**env, "FEATSTORE_TEST_DELAY": "0"})
    out, err = heir.communicate(timeout=300)
    assert heir.returncode == 0, err
    result = json.loads(out)[0]
    assert result["resumed_chunks"] == done_before and not result["cached"]
    assert result["computed_chunks"] == 10 - done_before
    with open_store(key_path) as fs:
        assert fs.verify().ok
        resumed = fs.load_features()
    clean = json.loads(subprocess.run(
        [sys.executable, "-m", "featstore_cli.main", *extract_args(texts, str(tmp_path / "clean"))],
        env={**os.environ, **env, "FEATSTORE_TEST_DELAY": "0"}, capture_output=True, text=True,
        check=True).stdout)[0]
    with open_store(clean["path"]) as fs:
        assert np.array_equal(fs.load_features(), resumed)


# -- errors a user can fix ---------------------------------------------------------------
def _unwritable() -> Path:
    probe = Path("/sys/fs/featstore-probe")
    try:
        probe.mkdir()
    except OSError:
        return Path("/sys/fs/featstore-root")
    probe.rmdir()
    pytest.skip("no unwritable location on this machine (sysfs is writable)")


def test_read_only_root_is_explained(runner, texts, plugin_env, tmp_path):
    root = _unwritable()
    res = runner.invoke(cli, extract_args(texts, str(root)))
    assert res.exit_code == 1 and "Choose a --root you can write to" in res.output, res.output
    src = str(tmp_path / "src")
    run_cli(runner, extract_args(texts, src))
    res = runner.invoke(cli, ["copy", src, str(root)])
    assert res.exit_code == 1 and "Choose a --root you can write to" in res.output, res.output


def test_missing_credentials_and_bucket_are_explained(s3_server, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("AWS_ACCESS_KEY_ID",
                                                            "AWS_SECRET_ACCESS_KEY")}
    env["HOME"] = str(tmp_path)  # no ~/.aws either
    res = subprocess.run([sys.executable, "-m", "featstore_cli.main", "ls", "s3://any/features"],
                         env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "No credentials for S3" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run([sys.executable, "-m", "featstore_cli.main", "ls", "s3://no-such-bucket/f"],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_a_stale_writer_learns_its_successor_finished(any_root):
    stale = Lease(any_root, "s" * 24, seconds=0.5)
    assert stale.acquire()  # ... then hangs past its lease (SIGSTOP, a suspended laptop)
    successor = Lease(any_root, "s" * 24, seconds=30)
    acquire_within(successor, 10)
    successor.release(remove=True)  # finished the set and cleaned up
    third = Lease(any_root, "s" * 24, seconds=30)
    assert third.acquire() and third.generation == stale.generation  # number reused
    with pytest.raises(LeaseLostError):
        stale.renew()  # not its token: must not go on writing
    third.renew()
    third.release(remove=True)


@pytest.mark.slow
def test_force_waits_for_the_writer_then_extracts_again(texts, plugin_env, tmp_path):
    root = str(tmp_path / "root")
    env = {**plugin_env, "FEATSTORE_TEST_DELAY": "0.2"}
    first = _spawn(extract_args(texts, root), env)
    deadline = time.time() + 120
    while not (Path(root) / ".leases").exists():  # the first writer holds the lease
        assert time.time() < deadline and first.poll() is None
        time.sleep(0.05)
    forced = _spawn(extract_args(texts, root, "--force"), env)
    outs = [p.communicate(timeout=300) for p in (first, forced)]
    assert first.returncode == 0 and forced.returncode == 0, outs
    a, b = (json.loads(o)[0] for o, _ in outs)
    assert not a["cached"] and not b["cached"] and b["computed_chunks"] == 10
    assert "is being extracted by" in outs[1][1]  # --force waited instead of racing
    with open_store(b["path"]) as fs:
        assert fs.verify().ok
    # Each computed it whole, one after the other: never two writers at once.
    assert calls(plugin_env["FEATSTORE_TEST_CALLS"])["forward"] == 400


def test_copy_replaces_a_partial_destination_with_another_layout(runner, texts, plugin_env,
                                                                  tmp_path):
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    out = json.loads(run_cli(runner, extract_args(texts, src)).stdout)[0]  # 20 rows/chunk
    # An interrupted extraction of the same key at the destination, 40 rows per chunk.
    other = json.loads(run_cli(runner, extract_args(texts, str(tmp_path / "tmp"),
                                                    "--chunk-rows", "40")).stdout)[0]
    assert other["key"] == out["key"]
    import shutil

    shutil.copytree(other["path"], Path(dst) / Path(other["path"]).name)
    meta_file = Path(dst) / Path(other["path"]).name / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["featstore"]["complete"] = False
    meta_file.write_text(json.dumps(meta))
    res = json.loads(run_cli(runner, ["copy", src, dst, "--json"]).stdout)
    assert res[0]["status"] == "copied" and res[0]["verified"]
    assert files_of(src) == files_of(dst)


def test_unpack_refuses_a_set_under_another_keys_name(runner, texts, plugin_env, tmp_path):
    src = str(tmp_path / "src")
    a = json.loads(run_cli(runner, extract_args(texts, src)).stdout)[0]
    b = json.loads(run_cli(runner, extract_args(texts, src, "--limit", "50")).stdout)[0]
    good, bad = tmp_path / "good.zip", tmp_path / "bad.zip"
    run_cli(runner, ["pack", src, str(good), "--key", b["key"]])
    # Rename b's set to a's key, manifest included: a poisoned cache if it were accepted.
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(bad, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "featstore-pack.json":
                data = data.replace(b["key"].encode(), a["key"].encode())
            zout.writestr(info.filename.replace(b["key"], a["key"]), data)
    dst = tmp_path / "dst"
    res = runner.invoke(cli, ["unpack", str(bad), str(dst)])
    assert res.exit_code == 1 and "refusing to store it under another key's name" in res.output
    assert Root(dst).entries() == []


def test_a_bucket_typo_is_an_error_not_a_new_bucket(runner, texts, plugin_env, s3_root, tmp_path):
    import s3fs

    src = str(tmp_path / "src")
    run_cli(runner, extract_args(texts, src))
    res = runner.invoke(cli, ["copy", src, "s3://no-such-bucket-x1/features"])
    assert res.exit_code == 1 and "The bucket does not exist" in res.output
    assert not s3fs.S3FileSystem(skip_instance_cache=True).exists("no-such-bucket-x1")


def test_pack_unpack_and_ls_mistakes_are_explained(runner, texts, plugin_env, tmp_path):
    src = str(tmp_path / "src")
    out = json.loads(run_cli(runner, extract_args(texts, src)).stdout)[0]
    cases = [
        (["pack", src, str(_unwritable().parent / "x.zip")], "Choose a place you can write to"),
        (["pack", src, str(tmp_path / "nodir" / "x.zip")], "does not exist; create it first"),
        (["pack", src, "s3://bucket/x.zip"], "pack writes a local zip file"),
        (["pack", src, str(tmp_path / "y.zip"), "--backbone", "nope"], "match the filters"),
        (["unpack", "s3://bucket/x.zip", src], "download it first"),
    ]
    for args, says in cases:
        res = runner.invoke(cli, args)
        assert res.exit_code == 1 and says in res.output, (args, res.output)
    zip_path = tmp_path / "ok.zip"
    run_cli(runner, ["pack", src, str(zip_path)])
    res = runner.invoke(cli, ["unpack", str(zip_path), str(zip_path)])  # root is a file
    assert res.exit_code == 1 and "is a file, not a folder" in res.output
    assert "match the filters (1 in all)" in run_cli(runner, ["ls", src, "--dataset", "nomatch-zz"]).stdout
    assert out["key"] in run_cli(runner, ["ls", src, "--key", out["key"][:6]]).stdout


def test_read_only_s3_credentials_are_explained(texts, plugin_env, runner, tmp_path):
    """A second moto server that enforces IAM: a user allowed to read but not write."""
    import boto3
    from helpers import start_moto

    # The first 5 requests (the set-up below) are let through; IAM is enforced after them.
    server, endpoint = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": "5"})
    try:
        kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="setup",
                  aws_secret_access_key="setup")
        boto3.client("s3", **kw).create_bucket(Bucket="team")
        iam = boto3.client("iam", **kw)
        iam.create_user(UserName="reader")
        iam.put_user_policy(UserName="reader", PolicyName="read-only", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Resource": "*",
                                                    "Action": ["s3:GetObject", "s3:ListBucket"]}]}))
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        src = str(tmp_path / "src")
        run_cli(runner, extract_args(texts, src))
        env = {**plugin_env, "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
               "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        ls = _spawn(["ls", "s3://team/features"], env)
        out, err = ls.communicate(timeout=120)
        assert ls.returncode == 0 and "No feature sets" in out, err   # reading is allowed
        for args in (["copy", src, "s3://team/features"], extract_args(texts, "s3://team/f")):
            proc = _spawn(args, env)
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 1 and "Access denied" in err, (args, err)
            assert "read-only root" in err and "Traceback" not in err
            assert key["SecretAccessKey"] not in out + err
    finally:
        server.terminate()
        server.wait(10)
