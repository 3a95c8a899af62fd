"""Hostile clients of the extraction service: it discloses nothing and has bounds.

One real `featstore serve` (a subprocess on 127.0.0.1, one CPU worker) serves the whole
module. It may read files only from two data folders; a private CSV inside one holds a
secret that no answer, job error or job log served to clients may ever contain. Each
bad request must get the right 4xx status and a JSON error that says what was
expected, and the service must go on serving. The CLI and ExtractConfig refuse the same
out-of-range options.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from featstore.errors import ConfigError
from featstore.extract.config import ExtractConfig
from featstore.workflows.service import client
from featstore.workflows.service.errors import JobFailedError, PathNotAllowedError
from featstore.workflows.service.queue import JobQueue
from featstore.workflows.service.requests import JobRequest, expand, parse_limits
from featstore_cli.main import cli

from helpers import assert_unchanged, assert_user_error, snapshot
from test_service import ALICE, Server, _npz, bb

SECRET = "SECRET-7f3a9c-do-not-echo"
LIMITS = "image_size=64,batch_size=32,views=2,chunk_rows=128,limit=1000,num_workers=2"


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """The service, its data folders (one given relative to its working folder, as an
    operator may) and files outside them, some reachable through symlinks inside."""
    top = tmp_path_factory.mktemp("hostile-service")
    data, weights, outside = top / "data", top / "weights", top / "outside"
    for d in (data, weights, outside):
        d.mkdir()
    (outside / "secret.csv").write_text(f"{SECRET},x\n1,2\n")
    (outside / "w.safetensors").write_bytes(SECRET.encode())
    (data / "escape").symlink_to(outside, target_is_directory=True)
    (data / "link.csv").symlink_to(outside / "secret.csv")
    (weights / "w-link.safetensors").symlink_to(outside / "w.safetensors")
    # Private files inside a data folder, each one a parser would quote in its error.
    (data / "header.csv").write_text(f"{SECRET},x\n1,2\n")
    (data / "splits.csv").write_text(f"text,split\nhello,{SECRET}\n")
    (data / "ids.csv").write_text(f"text,id\nhello,{SECRET}\nworld,{SECRET}\n")
    _npz(data / "d.npz", 20, 0)
    server = Server(top / "s", "--limits", LIMITS, "--read-timeout", "1", devices="cpu",
                    data_dirs=(Path("../data"), weights))
    server.data, server.weights, server.outside = data, weights, outside
    try:
        yield server
    finally:
        server.stop()


def answer(s: Server, status: int, body: Any, expected: int, *needles: str) -> None:
    """The status, a JSON error holding ``needles``, no secret, and the service still up."""
    assert status == expected, (status, body)
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    for needle in needles:
        assert needle.lower() in body["error"].lower(), (needle, body["error"])
    assert SECRET not in json.dumps(body)
    assert s.request("GET", "/health", token=None)[0] == 200


def raw(s: Server, data: bytes, *, half_close: bool = False) -> tuple[int, Any, float]:
    """Send bytes as they are; (status, JSON body, seconds until the answer ended: its
    Content-Length bytes read, or the connection closed)."""
    t0 = time.monotonic()
    received = b""
    with socket.create_connection((s.host, int(s.port)), timeout=30) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        while block := sock.recv(1 << 16):
            received += block
            head, sep, body = received.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if sep and length and len(body) >= int(length.group(1)):
                break  # a keep-alive connection stays open: the answer is complete
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body), time.monotonic() - t0


def post(body: bytes, *headers: str) -> bytes:
    lines = ["POST /jobs HTTP/1.1", "Host: x", f"Authorization: Bearer {ALICE}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


GOOD = {"backbone": bb("delta"), "dataset": "mnist-5k"}


# -- 1. errors never quote the data ----------------------------------------------------------
@pytest.mark.parametrize("name", ["header.csv", "splits.csv", "ids.csv"])
def test_private_csv_is_never_quoted_in_errors_or_logs(svc, name):
    s = svc
    path = str(s.data / name)
    with pytest.raises(JobFailedError) as failed:
        client.submit(s.url, {**GOOD, "dataset": path, "split": "train"}, token=ALICE,
                      wait=True, poll=0.2, timeout=120)
    [job] = failed.value.jobs
    assert job["state"] == "failed"
    assert "DataError while reading the data set" in job["error"] and path in job["error"]
    served = [str(failed.value), json.dumps(s.request("GET", "/jobs")[1]),
              json.dumps(s.request("GET", f"/jobs/{job['id']}")[1]),
              s.request("GET", f"/jobs/{job['id']}/log")[1]["log"]]
    assert "Traceback" in served[-1]  # where it failed, in code, without the message
    for text in served:
        assert SECRET not in text
    # The operator still has the details: the worker's own log, on the server.
    assert SECRET in "".join(p.read_text() for p in s.root.rglob("worker-*.log"))


# -- 2. only the data folders ----------------------------------------------------------------
OUTSIDE = {  # option -> how a request may try to reach a file outside the data folders
    "absolute": ("dataset", lambda s: str(s.outside / "secret.csv")),
    "dotdot": ("dataset", lambda s: str(s.data / ".." / "outside" / "secret.csv")),
    "relative": ("dataset", lambda s: "../outside/secret.csv"),
    "symlinked file": ("dataset", lambda s: str(s.data / "link.csv")),
    "symlinked folder": ("dataset", lambda s: str(s.data / "escape" / "secret.csv")),
    "system file": ("dataset", lambda s: "/etc/passwd"),
    "home": ("dataset", lambda s: "~/.ssh/id_rsa"),
    "missing outside": ("dataset", lambda s: "/no/such/folder/data.csv"),
    "weights": ("weights", lambda s: str(s.outside / "w.safetensors")),
    "weights symlink": ("weights", lambda s: str(s.weights / "w-link.safetensors")),
    "hf folder": ("backbone", lambda s: f"hf:{s.outside}"),
    "st folder": ("backbone", lambda s: "st:../outside"),
}


@pytest.mark.parametrize("case", OUTSIDE)
def test_paths_outside_the_data_folders_are_refused(svc, case):
    s = svc
    option, make = OUTSIDE[case]
    before = len(s.all_jobs())
    status, body = s.request("POST", "/jobs", {**GOOD, option: make(s)})
    # The folders by the names the operator gave; the same answer whether or not the
    # file exists, so nothing outside can be probed.
    answer(s, status, body, 403, "outside the folders this service may read",
           f"../data, {s.weights}", "--data-dir")
    assert len(s.all_jobs()) == before


def test_without_data_folders_only_built_in_data_sets(tmp_path):
    _npz(tmp_path / "d.npz", 10, 0)
    with pytest.raises(PathNotAllowedError, match="started without --data-dir"):
        expand({**GOOD, "dataset": "d.npz"}, str(tmp_path / "r"), cwd=tmp_path,
               allow_plugins=("service_backbones",))
    [job] = expand(GOOD, str(tmp_path / "r"), allow_plugins=("service_backbones",))
    assert job.dataset == "mnist-5k"


# -- 3. bounds: the operator's, and every caller's ----------------------------------------
BOUNDS = [("image_size", 0), ("image_size", -1), ("image_size", 65), ("image_size", 10**9),
          ("batch_size", 0), ("batch_size", 33), ("chunk_rows", 0), ("chunk_rows", 129),
          ("limit", 0), ("limit", 1001), ("num_workers", -1), ("num_workers", 3),
          ("seed", -1), ("views", 0), ("views", 3)]


@pytest.mark.parametrize("name,value", BOUNDS)
def test_options_out_of_bounds_are_refused(svc, name, value):
    s = svc
    extra = {"augment": "train"} if name == "views" else {}
    status, body = s.request("POST", "/jobs", {**GOOD, **extra, name: value})
    answer(s, status, body, 400, f"'{name}' option", "must be an int in [", str(value))


@pytest.mark.parametrize("flag,value", [("--image-size", "0"), ("--image-size", "-3"),
                                        ("--batch-size", "0"), ("--views", "0"),
                                        ("--chunk-rows", "-1"), ("--limit", "0"),
                                        ("--workers", "-1"), ("--seed", "-1"),
                                        ("--batch-size", "1000000"), ("--image-size", "9000")])
def test_extract_cli_refuses_out_of_range_values(runner, tmp_path, flag, value):
    before = snapshot(tmp_path)
    res = runner.invoke(cli, ["extract", "-b", "timm:test_resnet", "-d", "mnist-5k", "--root",
                              str(tmp_path / "root"), "--no-progress", flag, value])
    assert_user_error(res, value)
    assert_unchanged(before, snapshot(tmp_path))


def test_config_files_and_the_api_share_the_ranges(runner, tmp_path):
    config = tmp_path / "jobs.yaml"
    config.write_text("backbones: [timm:test_resnet]\ndatasets: [mnist-5k]\nimage_size: 0\n")
    res = runner.invoke(cli, ["extract", "--config", str(config), "--root", str(tmp_path / "r")])
    assert_user_error(res, "'image_size' option of extract must be an int in [1, 8192]")
    with pytest.raises(ConfigError, match=r"'lease_seconds'.*\(0, inf\)"):
        ExtractConfig(backbones=["x"], datasets=["y"], lease_seconds=float("nan"))
    for bad in ("image_size=0", "image_size=9000", "bogus=3", "views", "limit=x"):
        with pytest.raises(ConfigError, match="--limits"):
            parse_limits([bad])
    assert parse_limits(["image_size=512, views=4"])["image_size"] == 512


# -- 4. HTTP: a 4xx for every client mistake, never a 500 or a 30 s wait ---------------------
def test_body_shorter_than_its_content_length(svc):
    status, body, seconds = raw(svc, post(b'{"a"', "Content-Length: 100"))
    answer(svc, status, body, 408, "did not arrive", "100 bytes")
    assert seconds < 10  # the read timeout is 1 s; it used to be 30 s, then a 500
    status, body, seconds = raw(svc, post(b'{"a"', "Content-Length: 100"), half_close=True)
    answer(svc, status, body, 400, "ended after 4 of the 100 bytes")
    assert seconds < 5


RAW = {  # what is sent -> (status, what the error says)
    "nested arrays": (post(b"[" * 60000, "Content-Length: 60000"), 400, "nested too deeply"),
    "nested in a field": (post(b'{"backbones": ' + b"[" * 30000, "Content-Length: 30014"),
                          400, "nested too deeply"),
    "not UTF-8": (post(b"\xff\xfe{}", "Content-Length: 4"), 400, "not UTF-8"),
    "no Content-Length": (post(b""), 411, "Content-Length header"),
    "chunked": (post(b"2\r\n{}\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 411, "chunked"),
    "length not a number": (post(b"{}", "Content-Length: abc"), 400, "non-negative integer"),
    "negative length": (post(b"{}", "Content-Length: -1"), 400, "non-negative integer"),
    "two lengths": (post(b"{}", "Content-Length: 2", "Content-Length: 3"), 400, "one"),
    "huge header": (post(b"{}", "X-Pad: " + "a" * 70000, "Content-Length: 2"), 431,
                    "headers are too long"),
    "many headers": (post(b"{}", *[f"X-{i}: y" for i in range(120)], "Content-Length: 2"), 431,
                     "headers"),
    "long request line": (f"GET /jobs?x={'a' * 70000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
                          414, "request line is too long"),
    "unknown method": (b"BREW /jobs HTTP/1.1\r\nHost: x\r\n\r\n", 501, "not supported"),
    "bad version": (b"GET /health HTTP/9\r\nHost: x\r\n\r\n", 400, "version"),
    # HTTP/1.1 requires one Host header (RFC 9112, 3.2): h11 refuses a request without.
    "no Host": (b"GET /health HTTP/1.1\r\n\r\n", 400, "one Host header"),
    "huge job id": (f"GET /jobs/{'9' * 30} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                    f"{ALICE}\r\n\r\n".encode(), 404, "job ids are integers"),
    "unicode digit id": ("GET /jobs/%D9%A3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                         f"{ALICE}\r\n\r\n".encode(), 404, "job ids are integers"),
    # A request target is ASCII (RFC 3986): raw UTF-8 in it is refused before routing.
    "raw unicode in the path": ("GET /jobs/\u0663 HTTP/1.1\r\nHost: x\r\nAuthorization: "
                                f"Bearer {ALICE}\r\n\r\n".encode(), 400, "ASCII"),
    "non-ASCII token": (b"GET /jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xe9\xff"
                        b"\r\n\r\n", 401, "token"),
}


@pytest.mark.parametrize("case", RAW)
def test_malformed_http_gets_a_json_4xx(svc, case):
    data, expected, needle = RAW[case]
    status, body, _ = raw(svc, data)
    answer(svc, status, body, expected, needle)


BODIES = {  # a JSON body -> (status, what the error says)
    "empty": (b"", 400, "not valid JSON"),
    "not JSON": (b"{not json", 400, "not valid JSON"),
    "a list": (b"[1, 2]", 400, "not an object"),
    "a string": (b'"mnist-5k"', 400, "not an object"),
    "null": (b"null", 400, "not an object"),
    "huge number": (b"9" * 5000, 400, "not valid JSON"),
    "NaN size": (b'{"backbone": "x:y", "dataset": "mnist-5k", "image_size": NaN}', 400,
                 "'image_size' option of extract must be an int"),
    "unknown field": (json.dumps({**GOOD, "bakcbone": 1}).encode(), 400, "Unknown option"),
    "server field": (json.dumps({**GOOD, "root": "/"}).encode(), 400, "cannot be set"),
    "size as text": (json.dumps({**GOOD, "image_size": "big"}).encode(), 400,
                     "must be an int in [1, 8192]"),
    "batch as float": (json.dumps({**GOOD, "batch_size": 1.5}).encode(), 400,
                       "must be an int in [1, 65536]"),
    "backbones a number": (json.dumps({**GOOD, "backbone": 5}).encode(), 400,
                           "a non-empty list of non-empty strings"),
    "splits of numbers": (json.dumps({**GOOD, "splits": [1]}).encode(), 400,
                          "a non-empty list of non-empty strings"),
    "pretrained as text": (json.dumps({**GOOD, "pretrained": "yes"}).encode(), 400,
                           "must be a bool"),
    "column not a string": (json.dumps({**GOOD, "dataset_options": {"text_column": 1}})
                            .encode(), 400, "object of strings"),
    "unknown column option": (json.dumps({**GOOD, "dataset_options": {"path": "/etc"}})
                              .encode(), 400, "text_column"),
    "split is a path": (json.dumps({**GOOD, "split": "../../etc"}).encode(), 400,
                        "not a split name"),
    "NUL in a path": (json.dumps({**GOOD, "dataset": "d.npz\u0000.csv"}).encode(), 400, "NUL"),
}


@pytest.mark.parametrize("case", BODIES)
def test_bad_json_bodies_get_400(svc, case):
    data, expected, needle = BODIES[case]
    status, body = svc.request("POST", "/jobs", raw=data)
    answer(svc, status, body, expected, needle)


@pytest.mark.parametrize("token", [None, "x" * 40, ALICE.upper(), ALICE + " extra"])
def test_wrong_tokens_get_401(svc, token):
    status, body = svc.request("POST", "/jobs", GOOD, token=token)
    answer(svc, status, body, 401, "token")


# -- 5. identical requests at once make one job --------------------------------------------
def test_identical_concurrent_submissions_make_one_job(svc):
    """Many clients send the same request while its job runs and finishes: one job, the
    others join it or find it done (the window between a first look for a finished job
    and the insert used to make a second job)."""
    s = svc
    data = str(s.data / "d.npz")
    status, body = s.request("POST", "/jobs", {**GOOD, "dataset": data, "split": "warm"})
    s.wait([body["jobs"][0]["id"]])  # the worker holds the backbone: jobs take milliseconds
    for round_ in range(2):
        request = {**GOOD, "dataset": data, "split": f"burst{round_}"}
        answers: list[dict[str, Any]] = []
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            while len(answers) < 400 and (len(answers) < 100
                                          or all(a["status"] != "cached" for a in answers)):
                for status, body in pool.map(lambda _: s.request("POST", "/jobs", request),
                                             range(20)):
                    assert status in (200, 202), body
                    answers += body["jobs"]
        jobs = [j for j in s.all_jobs() if j["split"] == request["split"]]
        assert len(jobs) == 1, [(j["id"], j["state"]) for j in jobs]
        assert {a["id"] for a in answers} == {jobs[0]["id"]}
        assert [a["status"] for a in answers].count("queued") == 1


def test_a_job_done_between_the_first_look_and_the_insert_is_a_cache_hit(tmp_path):
    """The race, made to happen every time: the worker finishes the job just before the
    submitting transaction begins."""
    queue = JobQueue(tmp_path / "q.sqlite")
    queue.init("/root")
    req = JobRequest(config={}, request_key="k", backbone_group="g", backbone="b", dataset="d",
                     split="s")
    limits = dict(submitted_by="alice", max_attempts=1, max_queue=10, max_per_token=10)
    [first] = queue.submit([req], **limits)
    job = queue.claim("w0", 1, "cpu", 30, prefer=[])
    store = str(tmp_path / "set")
    write = queue._write

    @contextmanager
    def finished_just_before():
        queue._write = write
        queue.finish(job["id"], job["lease_owner"], {"key": "k0", "path": store})
        with write() as db:
            yield db

    queue._write = finished_just_before
    [again] = queue.submit([req], **limits, is_complete=lambda path: path == store)
    assert (again["status"], again["id"]) == ("cached", first["id"])
    assert [j["id"] for j in queue.list()] == [first["id"]]


@pytest.mark.parametrize("args,needle", [
    (["--data-dir", "no-such-folder"], "--data-dir no-such-folder: no such folder"),
    (["--limits", "image_size=0"], "--limits image_size=MAX"),
    (["--limits", "image_size=9000"], "[1, 8192]"),
    (["--limits", "colour=3"], "NAME one of image_size"),
    (["--read-timeout", "0"], "--read-timeout"),
])
def test_serve_refuses_bad_folders_and_bounds_before_starting(runner, tmp_path, monkeypatch,
                                                              args, needle):
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    res = runner.invoke(cli, ["serve", "--root", "root", "--devices", "cpu", "--port", "0",
                              *args], env={"FEATSTORE_SERVICE_TOKENS": f"alice:{ALICE}"})
    assert_user_error(res, needle)
    assert_unchanged(before, snapshot(tmp_path))
