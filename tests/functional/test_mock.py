"""Functional tests of the mock OpenAI upstream (gearshift.mock), driven over real HTTP."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gearshift.mock import MOCK_STATE, MockSettings, create_mock_app, start_mock

CHAT = "/v1/chat/completions"
QUESTION = "What is the capital of France and why is it so famous around the whole world"
EXPECTED = "Mock answer from gpt-4o: What is the capital of France and why is it so famous"
USAGE_KEYS = {
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]


def chat_body(model: str = "gpt-4o", **extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]
    return {"model": model, "messages": messages, **extra}


async def mock_client(
    aiohttp_client: Any, settings: MockSettings | None = None
) -> tuple[TestClient[web.Request, web.Application], web.Application]:
    app = create_mock_app(settings)
    return await aiohttp_client(app), app


async def sse_events(resp: aiohttp.ClientResponse) -> list[str]:
    """Payloads of the SSE events in a complete response (``data: `` stripped)."""
    raw = await resp.text()
    assert raw.endswith("\n\n")
    blocks = raw[:-2].split("\n\n")
    assert all(block.startswith("data: ") and "\n" not in block for block in blocks)
    return [block.removeprefix("data: ") for block in blocks]


async def read_lines_into(resp: aiohttp.ClientResponse, lines: list[bytes]) -> None:
    async for line in resp.content:
        lines.append(line)


async def test_non_stream_ok_has_openai_shape(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body()) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        assert resp.headers["x-request-id"] == "req_mock1"
        data = await resp.json()
    assert isinstance(data.pop("created"), int)
    prompt = 2 + len(QUESTION.split()) + 2 * 4  # words of both messages + 4 per message
    completion = len(EXPECTED.split())
    assert data == {
        "id": "chatcmpl-mock1",
        "object": "chat.completion",
        "model": "gpt-4o",
        "system_fingerprint": "fp_mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": EXPECTED, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
    }


async def test_content_parts_n_and_max_tokens(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    parts = [
        {"type": "text", "text": "first part"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "second"},
    ]
    body = {"model": "m", "messages": [{"role": "user", "content": parts}], "n": 2}
    async with client.post("/chat/completions", json=body) as resp:
        data = await resp.json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    texts = {c["message"]["content"] for c in data["choices"]}
    assert texts == {"Mock answer from m: first part second"}
    assert data["usage"]["completion_tokens"] == 2 * 7

    async with client.post(CHAT, json=chat_body(max_completion_tokens=3)) as resp:
        data = await resp.json()
    assert data["choices"][0]["message"]["content"] == "Mock answer from"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 3


async def test_stream_ok_matches_non_stream(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client, MockSettings(chunk_words=2))
    async with client.post(CHAT, json=chat_body(stream=True)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert resp.headers["x-request-id"] == "req_mock1"
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all("usage" not in chunk for chunk in chunks)
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert {chunk["id"] for chunk in chunks} == {"chatcmpl-mock1"}
    choices = [chunk["choices"][0] for chunk in chunks]
    assert choices[0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert choices[-1] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    content = [c["delta"]["content"] for c in choices[1:-1]]
    assert all(c["finish_reason"] is None for c in choices[:-1])
    assert "".join(content) == EXPECTED
    assert len(content) == (len(EXPECTED.split()) + 1) // 2
    assert content[0] == "Mock answer"


async def test_stream_include_usage_adds_usage_chunk(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    body = chat_body(stream=True, stream_options={"include_usage": True})
    async with client.post(CHAT, json=body) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    *regular, usage_chunk = chunks
    assert all(chunk["usage"] is None and len(chunk["choices"]) == 1 for chunk in regular)
    assert usage_chunk["choices"] == []
    assert set(usage_chunk["usage"]) == USAGE_KEYS
    assert usage_chunk["usage"]["completion_tokens"] == len(EXPECTED.split())
    assert regular[-1]["choices"][0]["finish_reason"] == "stop"


async def test_tool_call_non_stream(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    choice = {"type": "function", "function": {"name": "get_time"}}
    async with client.post(CHAT, json=chat_body(tools=TOOLS, tool_choice=choice)) as resp:
        data = await resp.json()
    first = data["choices"][0]
    assert first["finish_reason"] == "tool_calls"
    assert first["message"] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_mock1",
                "type": "function",
                "function": {"name": "get_time", "arguments": '{"mock": true}'},
            }
        ],
        "refusal": None,
    }

    async with client.post(CHAT, json=chat_body(tools=TOOLS)) as resp:
        data = await resp.json()
    assert data["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"

    async with client.post(CHAT, json=chat_body(tools=TOOLS, tool_choice="none")) as resp:
        data = await resp.json()
    assert data["choices"][0]["message"]["content"] == EXPECTED
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_tool_results_are_answered_in_text(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    messages = [
        *chat_body()["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call | {"arguments": "{}"}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
    ]
    body = {"model": "gpt-4o", "messages": messages, "tools": TOOLS}
    async with client.post(CHAT, json=body) as resp:
        data = await resp.json()
    # The last user text is answered, as the Anthropic and Gemini mocks do after tool results.
    assert data["choices"][0]["message"]["content"] == EXPECTED
    assert data["choices"][0]["finish_reason"] == "stop"


async def test_tool_call_stream(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body(tools=TOOLS, stream=True)) as resp:
        events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(e)["choices"][0]["delta"] for e in events[:-1]]
    head = deltas[0]["tool_calls"][0]
    assert head == {
        "index": 0,
        "id": "call_mock1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert deltas[0]["role"] == "assistant"
    fragments = [d["tool_calls"][0] for d in deltas[1:-1]]
    assert len(fragments) >= 2
    assert all(set(f) == {"index", "function"} for f in fragments)
    assert "".join(f["function"]["arguments"] for f in fragments) == '{"mock": true}'
    assert deltas[-1] == {}
    assert orjson.loads(events[-2])["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    ("model", "status", "type_", "code", "param"),
    [
        ("gpt-4o-http-500", 500, "server_error", None, None),
        ("http-503", 503, "server_error", None, None),
        ("x-http-429-y", 429, "requests", "rate_limit_exceeded", None),
        ("http-400", 400, "invalid_request_error", "context_length_exceeded", "messages"),
        ("http-401", 401, "invalid_request_error", "invalid_api_key", None),
    ],
)
async def test_http_failures(
    aiohttp_client: Any, model: str, status: int, type_: str, code: str | None, param: str | None
) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body(model, stream=True)) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        error = (await resp.json())["error"]
        headers = resp.headers
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == (type_, code, param)
    if status == 429:
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "1000")
    if status == 503:
        assert error["message"] == "The server is overloaded"
    if status == 401:
        assert "sk-ab***cd" in error["message"]


async def test_first_behaviour_match_wins_and_fail_overrides(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client, MockSettings(fail="http-500"))
    async with client.post(CHAT, json=chat_body("http-429-http-500")) as resp:
        assert resp.status == 500
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body("http-429-http-500")) as resp:
        assert resp.status == 500  # http-500 comes first in BEHAVIOURS


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "hi"}]}', None),
        (b'{"model": "gpt-4o"}', "messages"),
        (b'{"model": "gpt-4o", "messages": []}', "messages"),
        (b'{"model": "gpt-4o", "messages": "hi"}', "messages"),
        (b'{"model": 4, "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ],
)
async def test_invalid_requests_are_rejected(
    aiohttp_client: Any, body: bytes, param: str | None
) -> None:
    client, app = await mock_client(aiohttp_client)
    headers = {"Content-Type": "application/json"}
    async with client.post(CHAT, data=body, headers=headers) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert len(app[MOCK_STATE].requests) == 1  # invalid requests are recorded too


async def test_api_key_is_enforced(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client, MockSettings(api_key="sk-right"))
    async with client.post(CHAT, json=chat_body()) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] is None
    wrong = {"Authorization": "Bearer sk-wrong"}
    async with client.post(CHAT, json=chat_body("auth"), headers=wrong) as resp:
        assert resp.status == 401
        assert (await resp.json())["error"]["code"] == "invalid_api_key"
    right = {"Authorization": "Bearer sk-right"}
    async with client.post(CHAT, json=chat_body("auth"), headers=right) as resp:
        assert resp.status == 200
    async with client.get("/v1/models") as resp:
        assert resp.status == 401
    async with client.get("/v1/models", headers=right) as resp:
        assert resp.status == 200


async def test_models_listing(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.get("/v1/models") as resp:
        data = await resp.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-6.2-astra",
        "gpt-6.2-sol",
        "gpt-6.1-terra",
        "gpt-6-luna",
    ]
    assert data["data"][0] == {
        "id": "gpt-4o",
        "object": "model",
        "created": 1715367049,
        "owned_by": "mock",
    }


async def test_unknown_route_has_openai_error_shape(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post("/v1/nope", json={}) as resp:
        assert resp.status == 404
        error = (await resp.json())["error"]
    assert error == {
        "message": "Invalid URL (POST /v1/nope)",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


async def test_garbage_non_stream_is_not_json(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body("garbage")) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        raw = await resp.read()
    assert raw.startswith(b'{"id": "chatcmpl-x"')
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)


async def test_garbage_stream_sends_a_broken_event(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body("garbage", stream=True)) as resp:
        assert resp.status == 200
        events = await sse_events(resp)
    assert len(events) == 2
    assert orjson.loads(events[0])["choices"][0]["delta"]["role"] == "assistant"
    assert events[1] == "{not json"


async def test_error_event_stream_ends_without_done(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    async with client.post(CHAT, json=chat_body("error-event", stream=True)) as resp:
        assert resp.status == 200
        events = await sse_events(resp)
    assert len(events) == 3
    assert orjson.loads(events[1])["choices"][0]["delta"] == {"content": "Mock"}
    assert orjson.loads(events[2]) == {
        "error": {
            "message": "upstream exploded",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }


async def test_stream_cut_drops_the_connection_mid_stream(aiohttp_client: Any) -> None:
    client, app = await mock_client(aiohttp_client)
    lines: list[bytes] = []
    # The cut waits until we read: bytes and cut landing together, before a read, lose the bytes.
    app[MOCK_STATE].cut_gate = gate = asyncio.Event()
    async with client.post(CHAT, json=chat_body("stream-cut", stream=True)) as resp:
        assert resp.status == 200
        gate.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_lines_into(resp, lines)
    events = [orjson.loads(line[6:]) for line in lines if line.startswith(b"data: ")]
    assert len(events) == 3
    assert all(e["choices"][0]["finish_reason"] is None for e in events)
    assert b"data: [DONE]\n" not in lines
    assert app[MOCK_STATE].disconnects == 0  # a cut made by the mock is not a disconnect


async def test_a_held_cut_waits_for_its_gate(aiohttp_client: Any) -> None:
    client, app = await mock_client(aiohttp_client)
    app[MOCK_STATE].cut_gate = gate = asyncio.Event()
    async with client.post(CHAT, json=chat_body("reset-body", stream=True)) as resp:
        data = [await resp.content.readline() for _ in range(6)]  # 3 events, blank-separated
        assert sum(line.startswith(b"data: ") for line in data) == 3
        reading = asyncio.ensure_future(resp.content.read())
        async with client.post(CHAT, json=chat_body()) as other:  # the mock went on serving
            assert other.status == 200
            await other.read()
        assert not reading.done()  # ... and held this connection open, not cut
        gate.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await reading


async def test_stream_cut_non_stream_closes_without_response(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post(CHAT, json=chat_body("stream-cut"))


async def test_hang_then_client_cancel_counts_a_disconnect(aiohttp_client: Any) -> None:
    client, app = await mock_client(aiohttp_client)
    state = app[MOCK_STATE]
    request = asyncio.create_task(client.post(CHAT, json=chat_body("hang")))
    async with asyncio.timeout(5):
        await state.wait_for_requests(1)
        request.cancel()
        await state.wait_for_disconnects(1)
    assert state.disconnects == 1
    with pytest.raises(asyncio.CancelledError):
        await request


async def test_client_leaving_mid_stream_counts_a_disconnect(aiohttp_client: Any) -> None:
    client, app = await mock_client(aiohttp_client, MockSettings(chunk_delay_ms=50))
    state = app[MOCK_STATE]
    resp = await client.post(CHAT, json=chat_body(stream=True))
    assert (await resp.content.readline()).startswith(b"data: ")
    resp.close()  # drops the connection while the mock is pacing its chunks
    async with asyncio.timeout(5):
        await state.wait_for_disconnects(1)
    assert state.disconnects == 1


async def test_control_config_changes_behaviour(aiohttp_client: Any) -> None:
    client, app = await mock_client(aiohttp_client, MockSettings(chunk_words=3))
    async with client.post("/_mock/config", json={"fail": "http-503", "latency_ms": 1}) as resp:
        assert resp.status == 200
        assert (await resp.json())["fail"] == "http-503"
    async with client.post(CHAT, json=chat_body()) as resp:
        assert resp.status == 503
    for bad in ({"nope": 1}, {"chunk_words": 0}, {"fail": "explode"}, ["fail"]):
        async with client.post("/_mock/config", json=bad) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["type"] == "invalid_request_error"
    assert app[MOCK_STATE].settings == MockSettings(chunk_words=3, fail="http-503", latency_ms=1)
    async with client.post("/_mock/reset") as resp:
        assert resp.status == 200
    assert app[MOCK_STATE].settings == MockSettings(chunk_words=3)
    async with client.post(CHAT, json=chat_body()) as resp:
        assert resp.status == 200
        assert resp.headers["x-request-id"] == "req_mock1"  # ids restart after a reset


async def test_recorded_requests(aiohttp_client: Any) -> None:
    client, app = await mock_client(aiohttp_client)
    body = chat_body(temperature=0.5)
    headers = {"X-Custom-Thing": "yes", "Authorization": "Bearer sk-x"}
    async with client.post(CHAT, json=body, headers=headers) as resp:
        assert resp.status == 200
    async with client.post("/chat/completions", data=b"oops") as resp:
        assert resp.status == 400
    async with client.get("/_mock/requests") as resp:
        recorded = await resp.json()
    assert [r["path"] for r in recorded] == [CHAT, "/chat/completions"]
    assert [(r["query"], r["api"]) for r in recorded] == [("", "openai"), ("", "openai")]
    assert recorded[0]["body"] == body
    assert recorded[0]["headers"]["x-custom-thing"] == "yes"
    assert recorded[0]["headers"]["authorization"] == "Bearer sk-x"
    assert recorded[1]["body"] == {}
    state = app[MOCK_STATE]
    assert state.requests[0].body == body
    state.reset()
    async with client.get("/_mock/requests") as resp:
        assert await resp.json() == []


async def test_slow_and_latency_delay_the_answer(aiohttp_client: Any) -> None:
    client, _ = await mock_client(aiohttp_client, MockSettings(latency_ms=50))
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with client.post(CHAT, json=chat_body("gpt-4o-slow")) as resp:
        assert resp.status == 200
        content = (await resp.json())["choices"][0]["message"]["content"]
    assert loop.time() - started >= 0.24
    assert content.startswith("Mock answer from gpt-4o-slow: ")


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match="chunk_words"):
        MockSettings(chunk_words=0)
    with pytest.raises(ValueError, match="latency_ms"):
        MockSettings(latency_ms=-1)
    with pytest.raises(ValueError, match="fail"):
        MockSettings(fail="nope")


async def test_start_mock_serves_and_releases_hangs_on_cleanup() -> None:
    runner, port = await start_mock(settings=MockSettings(fail="hang"))
    state = runner.app[MOCK_STATE]
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            request = asyncio.create_task(session.post(url, json=chat_body()))
            async with asyncio.timeout(5):
                await state.wait_for_requests(1)
                await runner.cleanup()  # must not wait for the hanging handler
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await request
    finally:
        if runner.server is not None:  # the test failed before its own cleanup
            await runner.cleanup()
    assert port > 0
    assert state.disconnects == 0
