"""gearshift's HTTP surface against the mock OpenAI upstream, both on real loopback servers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeConfig, solo

from gearshift.mock import MockState
from gearshift.serve.app import create_app

MESSAGES = [{"role": "user", "content": "Say hello to the routing proxy"}]
ClientFactory = Callable[..., Awaitable[TestClient]]


def _events(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for block in raw.split(b"\n\n"):
        if block.startswith(b"data: "):
            payload = block[6:]
            out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def _content(events: list[Any]) -> str:
    return "".join(
        e["choices"][0]["delta"].get("content") or ""
        for e in events
        if isinstance(e, dict) and e.get("choices")
    )


async def _assert_openai_error(resp: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status == status
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    if code is not None:
        assert body["error"]["code"] == code
    return body["error"]


async def test_non_stream_round_trip(gateway: TestClient, mock_state: MockState) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES, "seed": 3},
        headers={"x-gearshift-route": "pin"},
    )
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"].startswith("Mock answer from gpt-4o")
    assert body["usage"]["total_tokens"] > 0
    assert resp.headers["x-gearshift-model"] == "gpt-4o"
    assert resp.headers["x-gearshift-provider"] == "openai"
    assert resp.headers["x-gearshift-tier"] == "frontier"
    assert resp.headers["x-gearshift-attempts"] == "1"
    assert resp.headers["x-request-id"]
    assert resp.headers["x-upstream-request-id"].startswith("req_mock")
    sent = mock_state.requests[-1]
    assert sent.body == {"model": "gpt-4o", "messages": MESSAGES, "seed": 3}
    assert sent.headers["authorization"] == "Bearer sk-test-provider-key-0123456789"


async def test_auto_goes_to_the_default_model_and_hints_are_stripped(
    gateway: TestClient, mock_state: MockState
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "auto",
            "messages": MESSAGES,
            "gearshift": {"tier": "light"},
            "vendor_extension": {"keep": True},
        },
    )
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "gpt-4o-mini"
    sent = mock_state.requests[-1].body
    assert sent["model"] == "gpt-4o-mini"
    assert sent["vendor_extension"] == {"keep": True}
    assert "gearshift" not in sent


async def test_stream_round_trip_without_usage(gateway: TestClient, mock_state: MockState) -> None:
    direct = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES}
    )
    expected = (await direct.json())["choices"][0]["message"]["content"]
    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    )
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/event-stream")
    assert resp.headers["x-gearshift-model"] == "gpt-4o-mini"
    events = _events(await resp.read())
    assert events[-1] == "[DONE]"
    assert _content(events) == expected
    assert all("usage" not in e for e in events if isinstance(e, dict))
    assert not [e for e in events if isinstance(e, dict) and e.get("choices") == []], (
        "the usage chunk gearshift asked for must not reach a client that did not"
    )
    assert mock_state.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_stream_usage_is_forwarded_when_the_client_asked(
    gateway: TestClient, mock_state: MockState
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    events = _events(await resp.read())
    usage_chunks = [e for e in events if isinstance(e, dict) and e.get("choices") == []]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["usage"]["total_tokens"] > 0
    assert events[-2] is usage_chunks[0]
    assert events[-1] == "[DONE]"
    assert mock_state.requests[-1].body["stream_options"] == {"include_usage": True}


async def test_stream_tool_calls_pass_through(gateway: TestClient) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    resp = await gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": MESSAGES, "tools": tools, "stream": True},
    )
    events = [e for e in _events(await resp.read()) if isinstance(e, dict)]
    calls = [tc for e in events for tc in e["choices"][0]["delta"].get("tool_calls") or []]
    assert calls[0]["function"]["name"] == "get_weather"
    assert "".join(c["function"].get("arguments", "") for c in calls) == '{"mock": true}'
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{oops", 400, "invalid_json"),
        (b'{"model": "gpt-4o"}', 400, "missing_required_parameter"),
        (b'{"model": "gpt-4o", "messages": {}}', 400, "invalid_type"),
        (b'{"model": "gpt-4o", "messages": []}', 400, "empty_array"),
        (
            b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}], "stream": 1}',
            400,
            "invalid_type",
        ),
        (
            b'{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
        (
            b'{"model": "claude-3-haiku", "messages": [{"role": "user", "content": "x"}]}',
            404,
            "model_not_found",
        ),
    ],
)
async def test_bad_input_gets_an_openai_error(
    gateway: TestClient, mock_state: MockState, body: bytes, status: int, code: str
) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", data=body, headers={"content-type": "application/json"}
    )
    await _assert_openai_error(resp, status, code)
    assert mock_state.requests == [], "a bad request never reaches the upstream"


async def test_unoffered_model_says_why(gateway: TestClient) -> None:
    resp = await gateway.post(
        "/v1/chat/completions", json={"model": "claude-3-haiku", "messages": MESSAGES}
    )
    error = await _assert_openai_error(resp, 404, "model_not_found")
    assert "ANTHROPIC_API_KEY" in error["message"] or "not supported" in error["message"]


async def test_body_over_the_limit_is_413(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await aiohttp_client(create_app(make_config("[server]\nmax_body_bytes = 1000\n")))
    big = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * 2000}]})
    await _assert_openai_error(
        await client.post("/v1/chat/completions", data=big), 413, "request_too_large"
    )

    async def chunked() -> Any:
        yield big  # no content-length: the limit is enforced while reading

    resp = await client.post("/v1/chat/completions", data=chunked())
    await _assert_openai_error(resp, 413, "request_too_large")


async def test_unknown_path_and_method(gateway: TestClient) -> None:
    await _assert_openai_error(await gateway.get("/v1/nothing-here"), 404, "unknown_url")
    resp = await gateway.get("/v1/chat/completions")
    await _assert_openai_error(resp, 405, "method_not_allowed")
    assert resp.headers["allow"] == "POST"


async def test_proxy_keys(aiohttp_client: ClientFactory, make_config: MakeConfig) -> None:
    client = await aiohttp_client(
        create_app(make_config(environ={"GEARSHIFT_API_KEYS": "team-key-1,team-key-2"}))
    )
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    await _assert_openai_error(
        await client.post("/v1/chat/completions", json=body), 401, "invalid_api_key"
    )
    resp = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": "Bearer wrong"}
    )
    await _assert_openai_error(resp, 401, "invalid_api_key")
    await _assert_openai_error(await client.get("/v1/models"), 401)
    resp = await client.post(
        "/v1/chat/completions", json=body, headers={"authorization": "Bearer team-key-2"}
    )
    assert resp.status == 200
    resp = await client.post("/v1/chat/completions", json=body, headers={"x-api-key": "team-key-1"})
    assert resp.status == 200
    assert (await client.get("/healthz")).status == 200, "probes need no key"


async def test_models_health_and_readiness(gateway: TestClient) -> None:
    resp = await gateway.get("/v1/models")
    body = await resp.json()
    assert body["object"] == "list"
    ids = [m["id"] for m in body["data"]]
    assert ids == [
        "auto",
        "gearshift/auto",
        "gearshift/light",
        "gearshift/standard",
        "gearshift/frontier",
        "gpt-4o",
        "gpt-4o-mini",
    ]
    assert all(m["object"] == "model" and "owned_by" in m for m in body["data"])
    one = await (await gateway.get("/v1/models/gpt-4o")).json()
    assert one["id"] == "gpt-4o"
    assert (await (await gateway.get("/v1/models/gearshift/auto")).json())["id"] == "gearshift/auto"
    await _assert_openai_error(
        await gateway.get("/v1/models/claude-3-haiku"), 404, "model_not_found"
    )
    assert (await (await gateway.get("/healthz")).json()) == {"status": "ok"}
    ready = await gateway.get("/readyz")
    assert ready.status == 200


async def test_not_ready_without_any_provider_key(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await aiohttp_client(create_app(make_config(environ={"OPENAI_API_KEY": ""})))
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await client.get("/healthz")).status == 200
    assert (await (await client.get("/v1/models")).json())["data"] == []
    await _assert_openai_error(
        await client.post("/v1/chat/completions", json={"model": "auto", "messages": MESSAGES}),
        503,
        "no_model_available",
    )
    await _assert_openai_error(
        await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES}),
        404,
        "model_not_found",
    )


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("gpt-4o-http-400", 400, "context_length_exceeded"),
        ("gpt-4o-http-401", 401, "upstream_auth_failed"),
        ("gpt-4o-http-429", 429, "rate_limit_exceeded"),
        ("gpt-4o-http-500", 502, None),
        ("gpt-4o-http-503", 503, None),
        ("gpt-4o-garbage", 502, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_upstream_errors_map_to_what_the_client_expects(
    aiohttp_client: ClientFactory,
    make_config: MakeConfig,
    model: str,
    status: int,
    code: str | None,
    stream: bool,
) -> None:
    if model.endswith("garbage") and stream:
        pytest.skip("a garbage stream starts with a 200; covered by the mid-stream tests")
    toml = solo(model)
    client = await aiohttp_client(create_app(make_config(toml)))
    resp = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "stream": stream}
    )
    error = await _assert_openai_error(resp, status, code)
    assert "sk-" not in error["message"]
    assert resp.headers["x-gearshift-model"] == model
    if status == 429:
        assert resp.headers["retry-after"] == "1"


@pytest.mark.parametrize("model", ["gpt-4o-stream-cut", "gpt-4o-garbage"])
async def test_a_stream_that_breaks_ends_with_an_error_event(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_state: MockState, model: str
) -> None:
    toml = solo(model)
    client = await aiohttp_client(create_app(make_config(toml)))
    # The cut waits until gearshift has answered (after the first bytes it read): otherwise
    # the bytes and the cut can land together and gearshift sees only the cut.
    mock_state.cut_gate = gate = asyncio.Event()
    resp = await client.post(
        "/v1/chat/completions", json={"model": model, "messages": MESSAGES, "stream": True}
    )
    gate.set()
    assert resp.status == 200
    events = _events(await resp.read())
    assert "[DONE]" not in events
    assert set(events[-1]) == {"error"}
    assert events[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in events


async def test_an_upstream_error_event_is_forwarded_once(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    toml = solo("gpt-4o-error-event")
    client = await aiohttp_client(create_app(make_config(toml)))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-error-event", "messages": MESSAGES, "stream": True},
    )
    events = _events(await resp.read())
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1
    assert events[-1] is errors[0]
    assert errors[0]["error"]["message"] == "upstream exploded"


async def test_unreachable_upstream_is_502(
    aiohttp_client: ClientFactory, make_config: MakeConfig, unused_port: int
) -> None:
    client = await aiohttp_client(
        create_app(
            make_config(environ={"GEARSHIFT_OPENAI_BASE_URL": f"http://127.0.0.1:{unused_port}/v1"})
        )
    )
    resp = await client.post("/v1/chat/completions", json={"model": "gpt-4o", "messages": MESSAGES})
    error = await _assert_openai_error(resp, 502)
    assert error["type"] == "connection_error"


@pytest.mark.parametrize("stream", [False, True])
async def test_client_disconnect_cancels_the_upstream_call(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_state: MockState, stream: bool
) -> None:
    toml = solo("gpt-4o-hang")
    client = await aiohttp_client(create_app(make_config(toml)))
    request = asyncio.ensure_future(
        client.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-hang", "messages": MESSAGES, "stream": stream},
        )
    )
    async with asyncio.timeout(5):
        await mock_state.wait_for_requests(1)
    request.cancel()  # the client goes away while the upstream is still working
    async with asyncio.timeout(5):
        await mock_state.wait_for_disconnects(1)
    assert mock_state.disconnects == 1


async def test_client_disconnect_mid_stream_cancels_the_upstream_stream(
    gateway: TestClient, mock_state: MockState
) -> None:
    mock_state.settings.chunk_delay_ms = 50  # a long, slowly paced answer
    resp = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o",
            "stream": True,
            "messages": [{"role": "user", "content": " ".join(["word"] * 40)}],
        },
    )
    assert resp.status == 200
    first = await resp.content.readany()
    assert first.startswith(b"data: ")
    resp.close()  # drop the connection mid-stream
    async with asyncio.timeout(5):
        await mock_state.wait_for_disconnects(1)
