"""The new endpoints over raw HTTP: bad input on each gets that API's own error shape, never
a traceback; authentication by ``x-api-key`` as well as Bearer; ``POST /v1/embeddings``
passed through to the configured embedding model and accounted."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from upstreams import state

from gearshift.config import load
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
KEY = "gs-http-key-0123"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
async def client(aiohttp_client: ClientFactory, mock_upstream: TestServer) -> TestClient:
    base = str(mock_upstream.make_url(""))
    env = {
        "OPENAI_API_KEY": "sk-http-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-http-0123456789",
        "GEMINI_API_KEY": "g-http-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": base + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": base + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": base + "/v1beta",
        "GEARSHIFT_API_KEYS": KEY,
    }
    config = load(None, environ=env, kinds=REGISTRY.keys())
    return await aiohttp_client(create_app(config))


def _anthropic_error(doc: Any, kind: str) -> None:
    assert doc["type"] == "error", doc
    assert doc["error"]["type"] == kind, doc
    assert doc["error"]["message"]


def _openai_error(doc: Any) -> None:
    assert set(doc) == {"error"}, doc
    assert doc["error"]["message"]
    assert "Traceback" not in doc["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (b'{"model": "claude-opus-5-5", "messages": [{"role": "user", "content": "hi"}]}', 400),
        (b'{"model": "claude-opus-5-5", "max_tokens": 8, "messages": []}', 400),
        (b'{"model": "claude-opus-5-5", "max_tokens": 8, "messages": [{"role": "x"}]}', 400),
        (
            b'{"model": "nope", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}',
            404,
        ),
    ],
)
async def test_messages_bad_input_gets_anthropics_error_shape(
    client: TestClient, body: bytes, status: int
) -> None:
    resp = await client.post(
        "/v1/messages",
        data=body,
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
    )
    assert resp.status == status
    doc = await resp.json()
    _anthropic_error(doc, "not_found_error" if status == 404 else "invalid_request_error")


async def test_messages_with_a_wrong_key_is_anthropics_401(client: TestClient) -> None:
    resp = await client.post("/v1/messages", json={"model": "auto"}, headers={"x-api-key": "wrong"})
    assert resp.status == 401
    _anthropic_error(await resp.json(), "authentication_error")
    resp = await client.post("/v1/messages/count_tokens", data=b"{", headers={"x-api-key": KEY})
    assert resp.status == 400
    _anthropic_error(await resp.json(), "invalid_request_error")


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b'{"model": "auto"}',
        b'{"model": "auto", "input": 42}',
        b'{"model": "auto", "input": [{"type": "function_call_output"}]}',
        b'{"model": "auto", "input": "hi", "tools": [{"type": "web_search_preview"}]}',
    ],
)
async def test_responses_bad_input_gets_openais_error_shape(
    client: TestClient, body: bytes
) -> None:
    resp = await client.post("/v1/responses", data=body, headers=AUTH)
    assert resp.status == 400
    _openai_error(await resp.json())


async def test_an_unknown_stored_response_is_a_404(client: TestClient) -> None:
    for method in ("GET", "DELETE"):
        resp = await client.request(method, "/v1/responses/resp_unknown", headers=AUTH)
        assert resp.status == 404
        _openai_error(await resp.json())
    resp = await client.get("/v1/responses/resp_unknown/input_items", headers=AUTH)
    assert resp.status == 404


async def test_embeddings_pass_through_and_are_accounted(
    client: TestClient, mock_upstream: TestServer
) -> None:
    body = {"model": "text-embedding-3-small", "input": ["a cat", "a dog on a mat"]}
    resp = await client.post("/v1/embeddings", json=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert [d["index"] for d in doc["data"]] == [0, 1]
    assert doc["usage"]["prompt_tokens"] > 0
    assert resp.headers["x-gearshift-model"] == "text-embedding-3-small"
    assert float(resp.headers["x-gearshift-cost-usd"]) == pytest.approx(
        doc["usage"]["prompt_tokens"] * 0.02 / 1e6
    )
    (sent,) = state(mock_upstream).requests
    assert sent.path == "/v1/embeddings"
    assert sent.body["model"] == "text-embedding-3-small"
    assert sent.headers["authorization"] == "Bearer sk-http-0123456789"
    stats = await (await client.get("/gearshift/stats", headers=AUTH)).json()
    assert stats["models"]["text-embedding-3-small"]["requests"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'model="text-embedding-3-small"' in metrics


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"model": "text-embedding-9", "input": "x"}, 404),
        ({"model": "text-embedding-3-small"}, 400),
        ({"input": "x"}, 400),
    ],
)
async def test_embeddings_bad_input(client: TestClient, body: Any, status: int) -> None:
    resp = await client.post("/v1/embeddings", json=body, headers=AUTH)
    assert resp.status == status
    _openai_error(await resp.json())


async def test_an_embedding_providers_failure_is_passed_on_in_openais_shape(
    client: TestClient, mock_upstream: TestServer
) -> None:
    state(mock_upstream).settings.api_key = "another-key"
    resp = await client.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "x"}, headers=AUTH
    )
    assert resp.status in (401, 502, 503)
    _openai_error(await resp.json())
    assert "sk-http" not in await resp.text()


async def test_an_anthropic_beta_header_reaches_anthropic_only(
    client: TestClient, mock_upstream: TestServer
) -> None:
    body = {
        "model": "claude-opus-5-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Prove there are infinitely many primes."}],
    }
    headers = {
        "x-api-key": KEY,
        "anthropic-beta": "output-300k-2026-03-24",
        "x-gearshift-route": "pin",
    }
    resp = await client.post("/v1/messages", json=body, headers=headers)
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        "/v1/messages",
        json={**body, "model": "gpt-6-luna"},
        headers=headers,
    )
    assert resp.status == 200, await resp.text()
    anthropic_call, openai_call = state(mock_upstream).requests
    assert anthropic_call.api == "anthropic"
    assert anthropic_call.headers["anthropic-beta"] == "output-300k-2026-03-24"
    assert "anthropic-beta" not in openai_call.headers


async def test_a_tiny_max_tokens_is_served_by_a_responses_api_model(
    client: TestClient, mock_upstream: TestServer
) -> None:
    """The Responses API refuses max_output_tokens below 16: a probe with max_tokens 1
    routed to a GPT-6 model gets 16 there, not a 400 no other model would give."""
    body = {"model": "gpt-6-luna", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}
    resp = await client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert resp.status == 200, await resp.text()
    (sent,) = state(mock_upstream).requests
    assert sent.path == "/v1/responses"
    assert sent.body["max_output_tokens"] == 16


async def test_a_store_that_cannot_open_never_costs_an_answer(
    aiohttp_client: ClientFactory, mock_upstream: TestServer, tmp_path: Any
) -> None:
    base = str(mock_upstream.make_url(""))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config_file = tmp_path / "g.toml"
    config_file.write_text(f"[store]\npath = '{blocker / 'responses.sqlite3'}'\n")
    env = {"OPENAI_API_KEY": "sk-http-0123456789", "GEARSHIFT_OPENAI_BASE_URL": base + "/v1"}
    client = await aiohttp_client(create_app(load(config_file, environ=env, kinds=REGISTRY.keys())))
    for store in (True, False):  # answered either way; only the keeping fails (logged)
        resp = await client.post(
            "/v1/responses", json={"model": "auto", "input": "hi", "store": store}
        )
        assert resp.status == 200, await resp.text()
    for method, path in (("GET", "/v1/responses/resp_1"), ("DELETE", "/v1/responses/resp_1")):
        resp = await client.request(method, path)
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "store_unavailable"
    resp = await client.post(
        "/v1/responses", json={"model": "auto", "input": "hi", "previous_response_id": "resp_1"}
    )
    assert resp.status == 503


async def test_a_session_name_does_not_cross_proxy_keys(
    aiohttp_client: ClientFactory, mock_upstream: TestServer
) -> None:
    base = str(mock_upstream.make_url(""))
    env = {
        "OPENAI_API_KEY": "sk-http-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-http-0123456789",
        "GEMINI_API_KEY": "g-http-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": base + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": base + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": base + "/v1beta",
        "GEARSHIFT_API_KEYS": "team-a-key-01,team-b-key-02",
    }
    client = await aiohttp_client(create_app(load(None, environ=env, kinds=REGISTRY.keys())))
    turn = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
    a = {"authorization": "Bearer team-a-key-01", "x-gearshift-session": "s1"}
    b = {"authorization": "Bearer team-b-key-02", "x-gearshift-session": "s1"}
    resp = await client.post(
        "/v1/chat/completions", json=turn, headers={**a, "x-gearshift-tier": "frontier"}
    )
    assert resp.status == 200
    frontier = resp.headers["x-gearshift-model"]
    resp = await client.post(
        "/v1/chat/completions", json=turn, headers={**a, "x-gearshift-tier": "light"}
    )
    assert resp.headers["x-gearshift-model"] == frontier  # team A's session holds
    assert "sticky" in resp.headers["x-gearshift-reason"]
    resp = await client.post(
        "/v1/chat/completions", json=turn, headers={**b, "x-gearshift-tier": "light"}
    )
    assert resp.headers["x-gearshift-model"] != frontier  # team B has no such session
    assert "sticky" not in resp.headers["x-gearshift-reason"]
