"""The embeddings-API backbone against a real local HTTP server."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest

from featstore.backbones.openai_api import OpenAIEmbeddings
from featstore.errors import EmbeddingAPIError
from featstore_cli.main import cli

from fake_embeddings_server import FakeEmbeddings, fake_embedding

KEY = "sk-test-secret-4f8a"


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeEmbeddings(token=KEY) as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


def _client(**kw):
    sleeps: list[float] = []
    return OpenAIEmbeddings("text-embedding-ada-002", sleep=sleeps.append, **kw), sleeps


def test_batches_and_order(server):
    client, _ = _client(batch_size=4)
    texts = [f"text {i}" for i in range(10)]
    emb = client.encode(texts)
    assert server.requests == 3 and emb.shape == (10, 8) and client.num_features == 8
    np.testing.assert_allclose(emb[7].numpy(), fake_embedding("text 7", 8), rtol=1e-6)


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


def test_extract_through_the_api_key_never_stored(server, runner, tmp_path, monkeypatch, caplog):
    data = tmp_path / "t.csv"
    data.write_text("text,label\n" + "\n".join(f"review {i},{i % 2}" for i in range(40)))
    args = ["extract", "--backbone", "openai:text-embedding-ada-002", "--dataset", str(data),
            "--root", str(tmp_path / "r"), "--chunk-rows", "16", "--batch-size", "8", "--json"]
    server.plan = ["ok", "ok", "429", "drop"]  # probe, then trouble mid-way
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    [out] = json.loads(res.output)
    assert out["shape"] == [40, 8]
    stored = (tmp_path / "r").rglob("*")
    for f in stored:
        if f.is_file():
            assert KEY.encode() not in f.read_bytes()
    assert KEY not in caplog.text and KEY not in res.output
    from featstore.store import open_store

    with open_store(out["path"]) as fs:
        np.testing.assert_allclose(fs.load_features()[3], fake_embedding("review 3", 8), atol=2e-3)
        assert fs.metadata["backbone"]["weights_source"] == f"api:{server.url}"


def test_outage_keeps_committed_chunks(server, runner, tmp_path, monkeypatch):
    data = tmp_path / "t.csv"
    data.write_text("text,label\n" + "\n".join(f"review {i},{i % 2}" for i in range(40)))
    args = ["extract", "--backbone", "openai:text-embedding-ada-002", "--dataset", str(data),
            "--root", str(tmp_path / "r"), "--chunk-rows", "16", "--batch-size", "8", "--json"]
    import featstore.backbones.openai_api as api

    real_init = api.OpenAIEmbeddings.__init__

    def no_wait(self, *a, **kw):
        real_init(self, *a, **{**kw, "sleep": lambda s: None, "max_retries": 2})

    monkeypatch.setattr(api.OpenAIEmbeddings, "__init__", no_wait)
    # probe + 2 batches (chunk 0) succeed, then the service goes down
    server.plan = ["ok", "ok", "ok"] + ["500"] * 3
    res = runner.invoke(cli, args)
    assert res.exit_code == 1 and "failed 3 times" in res.output
    served = server.texts_served
    res = runner.invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["resumed_chunks"] == 1
    # the rerun asked only for the rows not yet committed
    assert server.texts_served - served == 40 - 16
