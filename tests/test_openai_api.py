"""The embeddings-API backbone against a real local HTTP server."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from helpers import assert_user_error

from featstore.backbones import create_backbone
from featstore.backbones.openai_api import PROBE_TEXT, OpenAIEmbeddings
from featstore.errors import ConfigError, EmbeddingAPIError
from featstore.extract import ExtractConfig
from featstore.store import open_store
from featstore_cli.main import cli

from fake_embeddings_server import FakeEmbeddings, fake_embedding

KEY = "sk-test-secret-4f8a"
MODEL = "openai:text-embedding-ada-002"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeEmbeddings(token=KEY) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


def _client(**kw):
    sleeps: list[float] = []
    return OpenAIEmbeddings("text-embedding-ada-002", sleep=sleeps.append, **kw), sleeps


def _texts(tmp_path, n=40, name="t.csv"):
    data = tmp_path / name
    data.write_text("text,label\n" + "\n".join(f"review {i},{i % 2}" for i in range(n)))
    return data


def _extract(runner, data, root, *extra):
    args = ["extract", "--backbone", MODEL, "--dataset", str(data), "--root", str(root),
            "--chunk-rows", "16", "--batch-size", "8", "--json", "--no-progress", *extra]
    return runner.invoke(cli, args)


def _texts_asked(srv):
    """Texts the server was asked to embed, the fingerprint probes left out."""
    return [t for body in srv.bodies for t in body["input"] if t != PROBE_TEXT]


# -- the client ---------------------------------------------------------------------------
def test_batches_and_order(server):
    client, _ = _client(texts_per_request=4, concurrency=1)
    texts = [f"text {i}" for i in range(10)]
    emb = client.encode(texts)
    assert server.requests == 3 and emb.shape == (10, 8) and client.num_features == 8
    np.testing.assert_allclose(emb[7].numpy(), fake_embedding("text 7", 8), rtol=1e-6)
    assert server.max_in_flight == 1


def test_requests_in_flight_at_once_rows_by_position(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # the first request answers last: arrival order is not row order
    def slow_first(texts):
        return 0.3 if "text 0" in texts else 0.0

    with FakeEmbeddings(token=KEY, gate=4, latency=slow_first) as srv:
        client, _ = _client(base_url=srv.url, texts_per_request=2, concurrency=4)
        assert client.preferred_batch_rows == 8
        texts = [f"text {i}" for i in range(16)]
        emb = client.encode(texts).numpy()
    assert srv.requests == 8 and srv.max_in_flight == 4  # never more than --concurrency
    expected = np.array([fake_embedding(t, 8) for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(emb, expected)


def test_one_failed_request_fails_the_batch(server):
    client, _ = _client(texts_per_request=1, concurrency=4, max_retries=0)
    server.plan = ["ok", "ok", "500"]
    with pytest.raises(EmbeddingAPIError, match="HTTP 500"):
        client.encode([f"t{i}" for i in range(6)])


@pytest.mark.parametrize("failure", ["429", "500", "drop"])
def test_retries_then_succeeds(server, failure):
    client, sleeps = _client()
    server.plan = [failure, failure]
    emb = client.encode(["a", "b"])
    assert emb.shape == (2, 8) and server.requests == 3 and len(sleeps) == 2
    if failure == "429":
        assert sleeps == [0.0, 0.0]  # Retry-After honoured


def test_gives_up_with_a_clear_message(server):
    client, sleeps = _client(max_retries=2)
    server.plan = ["500"] * 5
    with pytest.raises(EmbeddingAPIError, match="failed 3 times .*HTTP 500.*rerun"):
        client.encode(["a"])
    assert sleeps[1] > sleeps[0] * 1.0 or sleeps[1] >= 1.0  # exponential backoff


def test_bad_key_no_retry_and_no_leak(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key-123")
    client, sleeps = _client()
    with pytest.raises(EmbeddingAPIError, match="401.*OPENAI_API_KEY") as err:
        client.encode(["a"])
    assert not sleeps and "sk-wrong-key-123" not in str(err.value)


def test_unreachable(monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client, sleeps = _client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=1)
    with pytest.raises(EmbeddingAPIError, match=f"127.0.0.1:{port}.*reachable"):
        client.encode(["a"])


def test_dimension_change(server):
    client, _ = _client()
    client.encode(["a"])
    server.plan = ["dim"]
    with pytest.raises(EmbeddingAPIError, match="9-d embeddings after 8-d"):
        client.encode(["b"])


def test_bad_options_are_refused_everywhere(server):
    with pytest.raises(ConfigError, match="'concurrency' option of openai:MODEL must be an int "
                                          r"in \[1, 1024\]. Got 0"):
        OpenAIEmbeddings("m", concurrency=0)
    with pytest.raises(ConfigError, match="'request_timeout' option of extract"):
        ExtractConfig(backbones=[MODEL], datasets=["x"], request_timeout=-1.0)
    with pytest.raises(ConfigError, match=r"\['concurrency'\] apply to embedding APIs"):
        create_backbone("timm:test_resnet", concurrency=4)


def test_fingerprint_tolerates_float_noise_only(server):
    client, _ = _client()
    stored = client.fingerprint()
    assert stored["probe"] == PROBE_TEXT and stored["dimensions"] == 8
    assert client.fingerprint_mismatch(stored, client.fingerprint()) is None

    def moved(by):
        other, _ = _client()
        fp = dict(stored)
        vec = np.frombuffer(__import__("base64").b64decode(fp["float32_base64"]), "<f4")
        fp["float32_base64"] = __import__("base64").b64encode(
            by(vec).astype("<f4").tobytes()).decode()
        return other.fingerprint_mismatch(stored, fp)

    rng = np.random.default_rng(0)
    assert moved(lambda v: v + rng.normal(size=v.size) * 1e-4 * np.abs(v).max()) is None
    assert "moved by" in moved(lambda v: 2 * v)  # a server that stopped normalising
    assert "cosine" in moved(lambda v: np.asarray(fake_embedding(PROBE_TEXT, 8, "b")))
    assert "dimensions" in moved(lambda v: v[:4])


# -- extraction through the API -------------------------------------------------------------
def test_extract_through_the_api_key_never_stored(server, runner, tmp_path, caplog):
    server.plan = ["ok", "ok", "429", "drop"]  # probes, then trouble mid-way
    res = _extract(runner, _texts(tmp_path), tmp_path / "r")
    assert res.exit_code == 0, res.output
    [out] = json.loads(res.stdout)
    assert out["shape"] == [40, 8]
    for f in (tmp_path / "r").rglob("*"):
        if f.is_file():
            assert KEY.encode() not in f.read_bytes()
    assert KEY not in caplog.text and KEY not in res.output
    with open_store(out["path"]) as fs:
        np.testing.assert_allclose(fs.load_features()[3], fake_embedding("review 3", 8), atol=2e-3)
        assert fs.metadata["backbone"]["weights_source"] == f"api:{server.url}"
        assert fs.metadata["model_fingerprint"]["probe"] == PROBE_TEXT


def test_outage_keeps_committed_chunks(server, runner, tmp_path):
    data = _texts(tmp_path)
    # dimension + fingerprint probes + 2 requests (chunk 0) succeed, then the service is down
    server.plan = ["ok"] * 4 + ["500"]
    res = _extract(runner, data, tmp_path / "r", "--max-retries", "0", "--concurrency", "1",
                   "--texts-per-request", "8")
    assert res.exit_code == 1 and "failed 1 times" in res.output
    asked = len(_texts_asked(server))
    res = _extract(runner, data, tmp_path / "r")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["resumed_chunks"] == 1
    # the rerun asked only for the rows not yet committed
    assert len(_texts_asked(server)) - asked == 40 - 16


def test_api_options_from_flags_and_config_leave_the_key(server, runner, tmp_path):
    data = _texts(tmp_path)
    res = _extract(runner, data, tmp_path / "r", "--texts-per-request", "3", "--concurrency",
                   "2", "--requests-per-minute", "60000", "--max-retries", "1",
                   "--request-timeout", "5", "--batch-size", "16")
    assert res.exit_code == 0, res.output
    [out] = json.loads(res.stdout)
    assert max(len(b["input"]) for b in server.bodies) == 3
    with open_store(out["path"]) as fs:
        assert fs.metadata["backbone_settings"] == {
            "texts_per_request": 3, "concurrency": 2, "requests_per_minute": 60000.0,
            "max_retries": 1, "request_timeout": 5.0, "backoff": 1.0, "max_backoff": 60.0}
    # the same values fetched another way: the same key, a cache hit, no request
    config = tmp_path / "jobs.yaml"
    config.write_text(f"backbones: [{MODEL}]\ndatasets: [{data}]\nroot: {tmp_path / 'r'}\n"
                      "chunk_rows: 16\nconcurrency: 8\ntexts_per_request: 5\n")
    before = server.requests
    res = runner.invoke(cli, ["extract", "--config", str(config), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["cached"] and server.requests == before
    config.write_text(config.read_text().replace("concurrency: 8", "concurrency: 0"))
    assert_user_error(runner.invoke(cli, ["extract", "--config", str(config)]),
                      "'concurrency' option of extract", "Got 0")
    assert_user_error(runner.invoke(cli, ["extract", "--backbone", "timm:test_resnet",
                                          "--dataset", str(data), "--root", str(tmp_path / "r"),
                                          "--concurrency", "4"]),
                      "apply to embedding APIs")


def test_dimensions_is_sent_and_keyed(server, runner, tmp_path):
    data = _texts(tmp_path)
    full = _extract(runner, data, tmp_path / "r")
    short = _extract(runner, data, tmp_path / "r", "--dimensions", "4")
    assert short.exit_code == 0, short.output
    [a], [b] = json.loads(full.stdout), json.loads(short.stdout)
    assert b["shape"] == [40, 4] and not b["cached"] and a["key"] != b["key"]
    assert server.bodies[-1]["dimensions"] == 4


def test_another_model_under_the_same_name_is_never_resumed(server, runner, tmp_path):
    """The reported bug: a service restarted mid-extraction with another model (another
    pooling) under the same name and dimension was resumed into one store."""
    data = _texts(tmp_path, 64)
    server.plan = ["ok"] * 6 + ["500"]  # 2 probes, chunks 0-1 (2 requests each), then down
    res = _extract(runner, data, tmp_path / "r", "--max-retries", "0", "--concurrency", "1",
                   "--texts-per-request", "8")
    assert res.exit_code == 1, res.output
    port = server.port
    server.__exit__(None, None, None)

    with FakeEmbeddings(token=KEY, port=port, model="b") as other:
        res = _extract(runner, data, tmp_path / "r")
        assert_user_error(res, "model behind openai:text-embedding-ada-002 changed since "
                          "chunks 0-1", "--force")
        err = json.loads(res.stdout)
        assert err["error"]["type"] == "ModelChangedError" and err["results"] == []
        assert _texts_asked(other) == []  # refused before a single row was asked for

    with FakeEmbeddings(token=KEY, port=port) as same:
        res = _extract(runner, data, tmp_path / "r")
        assert res.exit_code == 0, res.output
        [out] = json.loads(res.stdout)
        assert out["resumed_chunks"] == 2 and len(_texts_asked(same)) == 64 - 32
        clean = _extract(runner, data, tmp_path / "clean")
        [ref] = json.loads(clean.stdout)
    assert ref["key"] == out["key"] and not ref["cached"]
    with open_store(out["path"]) as resumed, open_store(ref["path"]) as uninterrupted:
        a, b = resumed.load_features(), uninterrupted.load_features()
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()

    with FakeEmbeddings(token=KEY, port=port, model="b"):
        res = _extract(runner, data, tmp_path / "r", "--force")
        assert res.exit_code == 0, res.output
        with open_store(json.loads(res.stdout)[0]["path"]) as fs:
            np.testing.assert_allclose(fs.load_features()[5],
                                       fake_embedding("review 5", 8, "b"), atol=2e-3)


def test_check_model_refuses_a_stale_cache_hit(server, runner, tmp_path):
    data = _texts(tmp_path, 20)
    assert _extract(runner, data, tmp_path / "r").exit_code == 0
    port = server.port
    server.__exit__(None, None, None)
    with FakeEmbeddings(token=KEY, port=port, model="b") as other:
        res = _extract(runner, data, tmp_path / "r")  # a plain hit asks the service nothing
        assert res.exit_code == 0 and json.loads(res.stdout)[0]["cached"]
        assert other.requests == 0
        res = _extract(runner, data, tmp_path / "r", "--check-model")
        assert_user_error(res, "no longer the one that computed the cached feature set",
                          "--force")
        assert json.loads(res.stdout)["error"]["type"] == "ModelChangedError"
    with FakeEmbeddings(token=KEY, port=port) as same:
        res = _extract(runner, data, tmp_path / "r", "--check-model")
        assert res.exit_code == 0 and json.loads(res.stdout)[0]["cached"]
        assert same.bodies == [{"model": "text-embedding-ada-002", "input": [PROBE_TEXT]}]


def test_json_error_lists_the_sets_finished_before(server, runner, tmp_path):
    a, b = _texts(tmp_path, 10, "a.csv"), _texts(tmp_path, 12, "b.csv")
    server.plan = ["ok"] * 4 + ["500"]  # set a: 2 probes + 2 requests; set b: its probe fails
    res = runner.invoke(cli, ["extract", "--backbone", MODEL, "--dataset", str(a), "--dataset",
                              str(b), "--root", str(tmp_path / "r"), "--texts-per-request", "8",
                              "--concurrency", "1", "--max-retries", "0", "--json"])
    assert_user_error(res, "HTTP 500")
    out = json.loads(res.stdout)
    assert out["error"]["type"] == "EmbeddingAPIError" and out["error"]["exit_code"] == 1
    assert "HTTP 500" in out["error"]["message"]
    [done] = out["results"]
    assert done["dataset"] == str(a) and done["shape"] == [10, 8] and not done["cached"]


def test_json_error_for_a_user_mistake(runner, tmp_path):
    res = runner.invoke(cli, ["extract", "--backbone", MODEL, "--dataset",
                              str(tmp_path / "missing.csv"), "--root", str(tmp_path / "r"),
                              "--json"])
    assert res.exit_code != 0
    out = json.loads(res.stdout)
    assert out["results"] == [] and "missing.csv" in out["error"]["message"]
