"""Functional tests of the mock's Anthropic Messages and Gemini generateContent APIs
(gearshift.mock), driven over real HTTP."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gearshift.mock import MOCK_STATE, MockSettings, create_mock_app

QUESTION = "What is the capital of France and why is it so famous around the whole world"
ANSWER_WORDS = "What is the capital of France and why is it so famous"
MESSAGES = "/v1/messages"
VERSION = {"anthropic-version": "2023-06-01"}
TOOLS = [
    {"name": "get_weather", "input_schema": {"type": "object"}},
    {"name": "get_time", "input_schema": {"type": "object"}},
]
DECLARATIONS = [{"functionDeclarations": [{"name": "get_weather"}, {"name": "get_time"}]}]
PNG = "iVBORw0KGgo="

Client = TestClient[web.Request, web.Application]


async def mock_client(aiohttp_client: Any, settings: MockSettings | None = None) -> Client:
    client: Client = await aiohttp_client(create_mock_app(settings))
    return client


async def read_into(source: AsyncIterable[bytes], into: list[bytes]) -> None:
    async for item in source:
        into.append(item)


def prompt_tokens(*texts: str) -> int:
    """The mock's rough prompt count: words plus 4 per message."""
    return sum(len(t.split()) + 4 for t in texts)


# --- Anthropic ---------------------------------------------------------------------------


def claude(model: str = "claude-x", **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": QUESTION}]
    return {"model": model, "max_tokens": 100, "system": "Be brief.", "messages": messages} | extra


def tool_history(result_id: str = "toolu_1") -> list[dict[str, Any]]:
    call = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "P"}}
    result = {"type": "tool_result", "tool_use_id": result_id, "content": "18C sunny"}
    return [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [{"type": "text", "text": "Checking."}, call]},
        {"role": "user", "content": [result, {"type": "text", "text": "thanks"}]},
    ]


async def post_claude(
    client: Client, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with client.post(MESSAGES, json=body, headers=VERSION | (headers or {})) as resp:
        return resp.status, await resp.json()


def named_events(raw: str) -> list[tuple[str, dict[str, Any]]]:
    """Anthropic's SSE: every event is exactly ``event: <type>`` then ``data: <json>``."""
    assert raw.endswith("\n\n")
    events = []
    for block in raw[:-2].split("\n\n"):
        event_line, data_line = block.split("\n")
        kind = event_line.removeprefix("event: ")
        data = orjson.loads(data_line.removeprefix("data: "))
        assert data["type"] == kind
        events.append((kind, data))
    return events


async def claude_stream(client: Client, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    async with client.post(MESSAGES, json=body | {"stream": True}, headers=VERSION) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        return named_events(await resp.text())


async def test_anthropic_answer_has_messages_shape(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post("/v1/messages", json=claude(), headers=VERSION) as resp:
        assert resp.status == 200
        assert resp.headers["request-id"] == "req_mock1"
        data = await resp.json()
    text = f"Mock answer from claude-x: {ANSWER_WORDS}"
    assert data == {
        "id": "msg_mock1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": prompt_tokens("Be brief.", QUESTION),
            "output_tokens": len(text.split()),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }
    status, data = await post_claude(client, claude(max_tokens=3))
    assert (status, data["content"][0]["text"]) == (200, "Mock answer from")
    assert (data["stop_reason"], data["usage"]["output_tokens"]) == ("max_tokens", 3)
    async with client.post("/messages", json=claude(), headers=VERSION) as resp:
        assert resp.status == 200  # also served without the /v1 prefix


async def test_anthropic_stream_matches_non_stream(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client, MockSettings(chunk_words=2))
    _, full = await post_claude(client, claude("claude-cache"))
    events = await claude_stream(client, claude("claude-cache"))
    kinds = [kind for kind, _ in events]
    deltas = kinds.count("content_block_delta")
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    text = full["content"][0]["text"]
    assert deltas == (len(text.split()) + 1) // 2
    message = events[0][1]["message"]
    assert message["id"] == "msg_mock2"
    assert (message["content"], message["stop_reason"]) == ([], None)
    assert message["usage"] == full["usage"] | {"output_tokens": 1}
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    pieces = [data["delta"] for kind, data in events if kind == "content_block_delta"]
    assert all(p["type"] == "text_delta" for p in pieces)
    assert "".join(p["text"] for p in pieces) == text
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": full["usage"]["output_tokens"]},
    }


async def test_anthropic_cache_usage(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    _, data = await post_claude(client, claude("claude-cache-test"))
    usage = data["usage"]
    assert (usage["cache_creation_input_tokens"], usage["cache_read_input_tokens"]) == (11, 100)
    assert usage["input_tokens"] == prompt_tokens("Be brief.", QUESTION)


async def test_anthropic_tool_call(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    _, data = await post_claude(client, claude(tools=TOOLS))
    assert data["stop_reason"] == "tool_use"
    assert data["content"] == [
        {"type": "tool_use", "id": "toolu_mock1", "name": "get_weather", "input": {"mock": True}}
    ]
    choice = {"type": "tool", "name": "get_time"}
    _, data = await post_claude(client, claude(tools=TOOLS, tool_choice=choice))
    assert data["content"][0]["name"] == "get_time"
    _, data = await post_claude(client, claude(tools=TOOLS, tool_choice={"type": "none"}))
    assert (data["content"][0]["type"], data["stop_reason"]) == ("text", "end_turn")
    # After tool results the mock answers in text, so a tool round trip ends.
    status, data = await post_claude(client, claude(tools=TOOLS, messages=tool_history()))
    assert (status, data["stop_reason"]) == (200, "end_turn")
    assert data["content"][0]["text"] == "Mock answer from claude-x: thanks"


async def test_anthropic_tool_call_stream(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    events = await claude_stream(client, claude(tools=TOOLS))
    assert events[1][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_mock1",
        "name": "get_weather",
        "input": {},
    }
    deltas = [data["delta"] for kind, data in events if kind == "content_block_delta"]
    assert all(d["type"] == "input_json_delta" for d in deltas)
    fragments = [d["partial_json"] for d in deltas]
    assert fragments[0] == ""
    assert len(fragments) >= 3
    assert all(len(f) <= 4 for f in fragments)
    assert orjson.loads("".join(fragments)) == {"mock": True}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-1][0] == "message_stop"


def _drop_key(key: str) -> dict[str, Any]:
    body = claude()
    del body[key]
    return body


def _user(content: Any) -> dict[str, Any]:
    return claude(messages=[{"role": "user", "content": content}])


def _image(source: dict[str, Any]) -> dict[str, Any]:
    return _user([{"type": "text", "text": "look"}, {"type": "image", "source": source}])


_CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}
_RESULT = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(_drop_key("model"), "model: Field required", id="no-model"),
        pytest.param(_drop_key("max_tokens"), "max_tokens: Field required", id="no-max-tokens"),
        pytest.param(claude(max_tokens=0), "greater than or equal to 1", id="max-tokens-0"),
        pytest.param(claude(max_tokens="9"), "valid integer", id="max-tokens-str"),
        pytest.param(_drop_key("messages"), "messages: Field required", id="no-messages"),
        pytest.param(claude(messages=[]), "at least one message", id="empty-messages"),
        pytest.param(
            claude(messages=[{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]),
            "messages.0.role: Input should be 'user' or 'assistant'",
            id="system-role",
        ),
        pytest.param(
            claude(messages=[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]),
            'roles must alternate between "user" and "assistant", but found multiple "user"',
            id="same-role-twice",
        ),
        pytest.param(
            claude(messages=[{"role": "assistant", "content": "a"}]),
            'first message must use the "user" role',
            id="assistant-first",
        ),
        pytest.param(
            _user(""),
            "messages.0: all messages must have non-empty content except for the optional "
            "final assistant message",
            id="empty-string-content",
        ),
        pytest.param(_user([]), "must have non-empty content", id="empty-list-content"),
        pytest.param(
            claude(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": ""},
                    {"role": "user", "content": "b"},
                ]
            ),
            "messages.1: all messages must have non-empty content",
            id="empty-middle-assistant",
        ),
        pytest.param(
            _user([{"type": "text", "text": ""}]),
            "text content blocks must be non-empty",
            id="empty-text-block",
        ),
        pytest.param(
            _user([{"type": "image_url", "image_url": {"url": "data:,"}}]),
            "messages.0.content.0: Input tag 'image_url' found using 'type'",
            id="unknown-block",
        ),
        pytest.param(claude(temperature=1.5), "less than or equal to 1", id="temperature"),
        pytest.param(
            claude(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [_CALL]},
                    {"role": "user", "content": "b"},
                ]
            ),
            "messages.1: tool_use ids were found without tool_result blocks immediately after: "
            "toolu_1",
            id="tool-use-unanswered",
        ),
        pytest.param(
            claude(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [_CALL]},
                ]
            ),
            "tool_use ids were found without tool_result blocks immediately after: toolu_1",
            id="tool-use-last",
        ),
        pytest.param(
            claude(messages=tool_history("toolu_9")),
            "unexpected tool_use_id found in tool_result blocks: toolu_9",
            id="tool-result-unknown-id",
        ),
        pytest.param(
            _user([_RESULT]),
            "unexpected tool_use_id found in tool_result blocks: toolu_1",
            id="tool-result-without-call",
        ),
        pytest.param(
            claude(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [_CALL]},
                    {"role": "user", "content": [{"type": "text", "text": "b"}, _RESULT]},
                ]
            ),
            "tool_result blocks must come before any other content",
            id="tool-result-not-first",
        ),
        pytest.param(
            claude(
                messages=[
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "content": [_CALL | {"input": '{"city": "P"}'}]},
                    {"role": "user", "content": [_RESULT]},
                ]
            ),
            "tool_use.input: Input should be a valid dictionary",
            id="tool-input-string",
        ),
        pytest.param(
            claude(tools=[{"input_schema": {}}]), "tools.0.name: Field required", id="tool-name"
        ),
        pytest.param(
            claude(tools=[{"name": "f", "parameters": {}}]),
            "tools.0.custom.input_schema: Field required",
            id="tool-schema",
        ),
        pytest.param(
            claude(tools=TOOLS, tool_choice={"type": "required"}),
            "Input tag 'required' found using 'type'",
            id="tool-choice-required",
        ),
        pytest.param(
            claude(tools=TOOLS, tool_choice="auto"),
            "tool_choice: Input should be a valid dictionary",
            id="tool-choice-string",
        ),
        pytest.param(
            claude(tools=TOOLS, tool_choice={"type": "tool"}),
            "tool_choice.tool.name: Field required",
            id="tool-choice-no-name",
        ),
        pytest.param(
            _image({"type": "base64", "media_type": "image/bmp", "data": PNG}),
            "media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'",
            id="image-media-type",
        ),
        pytest.param(
            _image({"type": "base64", "media_type": "image/png", "data": f"data:,{PNG}"}),
            "invalid base64 data",
            id="image-data-uri",
        ),
        pytest.param(
            _image({"type": "image_url", "url": "https://x/y.png"}),
            "Input tag 'image_url'",
            id="image-source-type",
        ),
    ],
)
async def test_anthropic_rejects_invalid_requests(
    aiohttp_client: Any, body: dict[str, Any], message: str
) -> None:
    client = await mock_client(aiohttp_client)
    status, data = await post_claude(client, body)
    assert status == 400
    assert data["type"] == "error"
    assert data["request_id"] == "req_mock1"
    assert data["error"]["type"] == "invalid_request_error"
    assert message in data["error"]["message"]


async def test_anthropic_accepts_valid_edge_cases(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    prefill = [{"role": "user", "content": "a"}, {"role": "assistant", "content": ""}]
    for body in (
        claude(messages=prefill),  # an empty final assistant message is a prefill
        _image({"type": "base64", "media_type": "image/png", "data": PNG}),
        _image({"type": "url", "url": "https://example.com/a.png"}),
        claude(system=[{"type": "text", "text": "Be brief."}], temperature=1),
        claude(tools=TOOLS, tool_choice={"type": "any"}),
    ):
        status, data = await post_claude(client, body)
        assert status == 200, data


async def test_anthropic_requires_version_header_and_json(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post(MESSAGES, json=claude()) as resp:
        assert resp.status == 400
        error = (await resp.json())["error"]
    assert error == {
        "type": "invalid_request_error",
        "message": "anthropic-version: header is required",
    }
    async with client.post(MESSAGES, data=b"{oops", headers=VERSION) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["type"] == "invalid_request_error"


async def test_anthropic_api_key(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client, MockSettings(api_key="sk-ant-right"))
    for headers, message in (
        ({}, "x-api-key header is required"),
        ({"x-api-key": "sk-ant-wrong"}, "invalid x-api-key"),
        ({"Authorization": "Bearer sk-ant-right"}, "x-api-key header is required"),
    ):
        status, data = await post_claude(client, claude(), headers)
        assert status == 401
        assert data["error"] == {"type": "authentication_error", "message": message}
    status, _ = await post_claude(client, claude(), {"x-api-key": "sk-ant-right"})
    assert status == 200


@pytest.mark.parametrize(
    ("model", "status", "type_"),
    [
        ("claude-http-500", 500, "api_error"),
        ("claude-http-503", 529, "overloaded_error"),
        ("claude-http-429", 429, "rate_limit_error"),
        ("claude-http-400", 400, "invalid_request_error"),
        ("claude-http-401", 401, "authentication_error"),
    ],
)
async def test_anthropic_http_failures(
    aiohttp_client: Any, model: str, status: int, type_: str
) -> None:
    client = await mock_client(aiohttp_client)
    body = claude(model, stream=True)
    async with client.post(MESSAGES, json=body, headers=VERSION) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        data = await resp.json()
        headers = resp.headers
    assert set(data) == {"type", "error", "request_id"}
    assert (data["type"], data["error"]["type"], data["request_id"]) == (
        "error",
        type_,
        "req_mock1",
    )
    assert headers["request-id"] == "req_mock1"
    if status == 429:
        assert headers["retry-after"] == "1"
    if status == 529:
        assert data["error"]["message"] == "Overloaded"
    if status == 400:
        assert data["error"]["message"].startswith("prompt is too long")


async def test_anthropic_error_event_streams(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    events = await claude_stream(client, claude("claude-error-event"))
    kinds = [kind for kind, _ in events]
    assert kinds == ["message_start", "content_block_start", "ping", "content_block_delta", "error"]
    assert events[-1][1] == overloaded
    events = await claude_stream(client, claude("claude-error-first"))
    assert events == [("error", overloaded)]
    status, data = await post_claude(client, claude("claude-error-event"))
    assert (status, data) == (200, overloaded)


async def test_anthropic_garbage(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post(MESSAGES, json=claude("garbage"), headers=VERSION) as resp:
        assert resp.status == 200
        raw = await resp.read()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    body = claude("garbage", stream=True)
    async with client.post(MESSAGES, json=body, headers=VERSION) as resp:
        raw = await resp.read()
    *good, bad = raw.decode().removesuffix("\n\n").split("\n\n")
    assert [block.split("\n")[0] for block in good] == [
        "event: message_start",
        "event: content_block_start",
        "event: ping",
    ]
    assert bad == "event: content_block_delta\ndata: {not json"


async def test_anthropic_stream_cut(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    lines: list[bytes] = []
    body = claude("stream-cut", stream=True)
    # The cut waits until we read: bytes and cut landing together, before a read, lose the bytes.
    client.server.app[MOCK_STATE].cut_gate = gate = asyncio.Event()
    async with client.post(MESSAGES, json=body, headers=VERSION) as resp:
        assert resp.status == 200
        gate.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(resp.content, lines)
    kinds = [line[7:].strip() for line in lines if line.startswith(b"event: ")]
    assert (
        kinds == [b"message_start", b"content_block_start", b"ping"] + [b"content_block_delta"] * 2
    )
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post(MESSAGES, json=claude("stream-cut"), headers=VERSION)


# --- Gemini ------------------------------------------------------------------------------


def gemini(**extra: Any) -> dict[str, Any]:
    return {
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": QUESTION}]}],
    } | extra


def generate(model: str = "gemini-x", stream: bool = False, query: str = "") -> str:
    method = "streamGenerateContent" if stream else "generateContent"
    return f"/v1beta/models/{model}:{method}{query}"


async def post_gemini(
    client: Client, url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    async with client.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def gemini_sse(client: Client, url: str, body: Any) -> list[Any]:
    """Gemini's SSE: only ``data:`` lines, each a whole response; no ``[DONE]``."""
    async with client.post(url, json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        raw = await resp.text()
    assert raw.endswith("\n\n")
    blocks = raw[:-2].split("\n\n")
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks)
    return [orjson.loads(b.removeprefix("data: ")) for b in blocks]


def gemini_text(responses: list[Any]) -> str:
    return "".join(
        part.get("text", "") for r in responses for part in r["candidates"][0]["content"]["parts"]
    )


async def test_gemini_answer_has_generate_content_shape(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    status, data = await post_gemini(client, generate(), gemini())
    assert status == 200
    text = f"Mock answer from gemini-x: {ANSWER_WORDS}"
    prompt = prompt_tokens("Be brief.", QUESTION)
    assert data == {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": text}]},
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": prompt,
            "candidatesTokenCount": len(text.split()),
            "totalTokenCount": prompt + len(text.split()),
        },
        "modelVersion": "gemini-x",
        "responseId": "mock1",
    }
    config = {"maxOutputTokens": 3, "temperature": 0.2}
    _, data = await post_gemini(client, generate(), gemini(generationConfig=config))
    candidate = data["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": "Mock answer from"}]
    assert candidate["finishReason"] == "MAX_TOKENS"


async def test_gemini_usage_thinking_and_cache(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    _, data = await post_gemini(client, generate("gemini-think-cache"), gemini())
    usage = data["usageMetadata"]
    prompt = prompt_tokens("Be brief.", QUESTION) + 50  # cached input counts in the prompt
    assert usage["promptTokenCount"] == prompt
    assert (usage["thoughtsTokenCount"], usage["cachedContentTokenCount"]) == (7, 50)
    total = prompt + usage["candidatesTokenCount"] + 7
    assert usage["totalTokenCount"] == total


async def test_gemini_sse_stream_matches_non_stream(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client, MockSettings(chunk_words=2))
    _, full = await post_gemini(client, generate("gemini-think"), gemini())
    url = generate("gemini-think", stream=True, query="?alt=sse")
    responses = await gemini_sse(client, url, gemini())
    text = full["candidates"][0]["content"]["parts"][0]["text"]
    assert len(responses) == (len(text.split()) + 1) // 2
    assert gemini_text(responses) == text
    assert {r["responseId"] for r in responses} == {"mock2"}
    assert all("finishReason" not in r["candidates"][0] for r in responses[:-1])
    assert responses[-1]["candidates"][0]["finishReason"] == "STOP"
    assert responses[-1]["usageMetadata"] == full["usageMetadata"]
    counts = [r["usageMetadata"]["candidatesTokenCount"] for r in responses]
    assert counts == sorted(counts)  # cumulative


async def test_gemini_stream_without_alt_is_a_json_array(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post(generate(stream=True), json=gemini()) as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        responses = orjson.loads(await resp.read())
    assert isinstance(responses, list)
    assert len(responses) == len(f"Mock answer from gemini-x: {ANSWER_WORDS}".split())
    assert gemini_text(responses) == f"Mock answer from gemini-x: {ANSWER_WORDS}"
    assert responses[-1]["candidates"][0]["finishReason"] == "STOP"


async def test_gemini_function_call(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    _, data = await post_gemini(client, generate(), gemini(tools=DECLARATIONS))
    candidate = data["candidates"][0]
    assert candidate["finishReason"] == "STOP"  # as Gemini does, even for calls
    assert candidate["content"] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"mock": True}}}],
    }
    forced = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_time"]}}
    _, data = await post_gemini(client, generate(), gemini(tools=DECLARATIONS, toolConfig=forced))
    assert data["candidates"][0]["content"]["parts"][0]["functionCall"]["name"] == "get_time"
    off = {"functionCallingConfig": {"mode": "NONE"}}
    _, data = await post_gemini(client, generate(), gemini(tools=DECLARATIONS, toolConfig=off))
    assert "text" in data["candidates"][0]["content"]["parts"][0]
    # After function responses the mock answers in text, so a tool round trip ends.
    contents = [
        {"role": "user", "parts": [{"text": QUESTION}]},
        {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {}}}]},
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "18C"}}}],
        },
    ]
    body = gemini(tools=DECLARATIONS, contents=contents)
    status, data = await post_gemini(client, generate(), body)
    assert status == 200
    text = data["candidates"][0]["content"]["parts"][0]["text"]
    assert text == f"Mock answer from gemini-x: {ANSWER_WORDS}"


async def test_gemini_function_call_stream_arrives_whole(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    url = generate(stream=True, query="?alt=sse")
    responses = await gemini_sse(client, url, gemini(tools=DECLARATIONS))
    assert len(responses) == 1
    candidate = responses[0]["candidates"][0]
    assert candidate["content"]["parts"] == [
        {"functionCall": {"name": "get_weather", "args": {"mock": True}}}
    ]
    assert candidate["finishReason"] == "STOP"
    assert responses[0]["usageMetadata"]["candidatesTokenCount"] > 0


def _contents(*turns: tuple[str, list[Any]]) -> dict[str, Any]:
    return gemini(contents=[{"role": role, "parts": parts} for role, parts in turns])


_Q = ("user", [{"text": "q"}])
_FCALL = ("model", [{"functionCall": {"name": "f", "args": {}}}])
_FRESP = ("user", [{"functionResponse": {"name": "f", "response": {"r": 1}}}])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param({}, "contents is not specified", id="no-contents"),
        pytest.param(gemini(contents=[]), "contents is not specified", id="empty-contents"),
        pytest.param(
            _contents(("assistant", [{"text": "a"}])),
            "Please use a valid role: user, model.",
            id="assistant-role",
        ),
        pytest.param(
            _contents(_Q, ("function", _FRESP[1])),
            "Please use a valid role: user, model.",
            id="function-role",
        ),
        pytest.param(
            _contents(_Q, _Q),
            "Please ensure that multiturn requests alternate between user and model.",
            id="same-role-twice",
        ),
        pytest.param(_contents(("user", [])), "parts must not be empty", id="no-parts"),
        pytest.param(_contents(("user", [{"text": ""}])), "empty text parameter", id="empty-text"),
        pytest.param(
            _contents(("user", [{"type": "text", "text": "hi"}])),
            "Unknown name \"type\" at 'contents[0].parts[0]'",
            id="openai-style-part",
        ),
        pytest.param(
            _contents(("user", [{"thought": True}])),
            "required oneof field 'data' must have one initialized field",
            id="part-without-data",
        ),
        pytest.param(
            _contents(_Q, ("model", [{"text": "x", "functionCall": {"name": "f"}}])),
            "oneof field 'data' is already set",
            id="two-data-fields",
        ),
        pytest.param(
            _contents(
                _Q, _FCALL, ("user", [{"functionResponse": {"name": "f", "response": "18C"}}])
            ),
            "functionResponse.response",
            id="response-not-object",
        ),
        pytest.param(
            _contents(_Q, _FCALL, ("user", [{"functionResponse": {"name": "g", "response": {}}}])),
            "name of each function response part matches",
            id="response-name-mismatch",
        ),
        pytest.param(
            _contents(_Q, ("model", _FCALL[1] * 2), _FRESP),
            "number of function response parts is equal to the number of function call parts",
            id="response-count-mismatch",
        ),
        pytest.param(
            _contents(_Q, _FCALL, _Q),
            "number of function response parts",
            id="call-unanswered",
        ),
        pytest.param(
            _contents(_Q, ("model", [{"text": "a"}]), _FRESP),
            "function response turn comes immediately after a function call turn",
            id="response-without-call",
        ),
        pytest.param(
            _contents(_FCALL, _FRESP),
            "function call turn comes immediately after a user turn",
            id="call-first",
        ),
        pytest.param(
            _contents(("user", [{"inlineData": {"data": PNG}}])),
            "mime_type",
            id="inline-no-mime",
        ),
        pytest.param(
            _contents(("user", [{"inlineData": {"mimeType": "image/png", "data": "data:,x"}}])),
            "Base64 decoding failed",
            id="inline-not-base64",
        ),
        pytest.param(
            gemini(systemInstruction={"text": "Be brief."}),
            "system_instruction.parts",
            id="system-without-parts",
        ),
        pytest.param(
            gemini(messages=[]), 'Unknown name "messages": Cannot find field.', id="messages"
        ),
        pytest.param(gemini(model="gemini-x"), 'Unknown name "model"', id="model-in-body"),
        pytest.param(
            gemini(generationConfig={"max_tokens": 5}),
            "Unknown name \"max_tokens\" at 'generation_config'",
            id="generation-unknown",
        ),
        pytest.param(
            gemini(generationConfig={"stopSequences": list("abcdef")}),
            "at most 5 stop sequences",
            id="six-stops",
        ),
        pytest.param(
            gemini(tools=[{"functionDeclarations": [{"description": "no name"}]}]),
            "Name cannot be empty",
            id="declaration-without-name",
        ),
        pytest.param(
            gemini(toolConfig={"functionCallingConfig": {"mode": "REQUIRED"}}),
            "function_calling_config.mode",
            id="bad-mode",
        ),
    ],
)
async def test_gemini_rejects_invalid_requests(
    aiohttp_client: Any, body: dict[str, Any], message: str
) -> None:
    client = await mock_client(aiohttp_client)
    status, data = await post_gemini(client, generate(), body)
    assert status == 400
    assert set(data) == {"error"}
    error = data["error"]
    assert (error["code"], error["status"]) == (400, "INVALID_ARGUMENT")
    assert message in error["message"]


async def test_gemini_accepts_valid_requests(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    config = {"stopSequences": ["a"] * 5, "thinkingConfig": {"thinkingBudget": 0}}
    for body in (
        _contents(_Q, _FCALL, _FRESP),
        _contents(
            ("user", [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": PNG}}])
        ),
        gemini(generationConfig=config, safetySettings=[]),
        gemini(toolConfig={"functionCallingConfig": {"mode": "VALIDATED"}}, tools=DECLARATIONS),
    ):
        status, data = await post_gemini(client, generate(), body)
        assert status == 200, data
    async with client.post(generate(), data=b"{oops") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["status"] == "INVALID_ARGUMENT"


async def test_gemini_api_key(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client, MockSettings(api_key="AIza-right"))
    for url, headers in (
        (generate(), {}),
        (generate(), {"x-goog-api-key": "AIza-wrong"}),
        (generate(query="?key=AIza-wrong"), {}),
        (generate(), {"Authorization": "Bearer AIza-right"}),
    ):
        status, data = await post_gemini(client, url, gemini(), headers)
        assert status == 400
        assert data["error"]["message"] == "API key not valid. Please pass a valid API key."
        assert data["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    status, _ = await post_gemini(client, generate(), gemini(), {"x-goog-api-key": "AIza-right"})
    assert status == 200
    status, _ = await post_gemini(client, generate(query="?key=AIza-right"), gemini())
    assert status == 200
    async with client.get("/v1beta/models") as resp:
        assert resp.status == 400
    async with client.get("/v1beta/models?key=AIza-right") as resp:
        assert resp.status == 200


@pytest.mark.parametrize(
    ("model", "status", "code"),
    [
        ("gemini-http-500", 500, "INTERNAL"),
        ("gemini-http-503", 503, "UNAVAILABLE"),
        ("gemini-http-429", 429, "RESOURCE_EXHAUSTED"),
        ("gemini-http-400", 400, "INVALID_ARGUMENT"),
        ("gemini-http-401", 400, "INVALID_ARGUMENT"),
    ],
)
async def test_gemini_http_failures(
    aiohttp_client: Any, model: str, status: int, code: str
) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post(generate(model, stream=True, query="?alt=sse"), json=gemini()) as resp:
        assert resp.status == status
        assert resp.content_type == "application/json"
        data = await resp.json()
    error = data["error"]
    assert (error["code"], error["status"]) == (status, code)
    assert isinstance(error["message"], str)
    details = error.get("details", [])
    if status == 429:
        assert details == [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1s"}
        ]
    if model.endswith("401"):
        assert details[0]["reason"] == "API_KEY_INVALID"


async def test_gemini_error_event_streams(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    url = generate("gemini-error-event", stream=True, query="?alt=sse")
    responses = await gemini_sse(client, url, gemini())
    *chunks, error = responses
    assert len(chunks) == 1
    assert gemini_text(chunks) == "Mock"
    assert all("finishReason" not in c["candidates"][0] for c in chunks)
    assert set(error) == {"error"}
    assert (error["error"]["code"], error["error"]["status"]) == (500, "INTERNAL")
    url = generate("gemini-error-first", stream=True, query="?alt=sse")
    assert await gemini_sse(client, url, gemini()) == [error]
    async with client.post(generate("gemini-error-event", stream=True), json=gemini()) as resp:
        array = orjson.loads(await resp.read())
    assert array[-1] == error
    assert (await post_gemini(client, generate("gemini-error-event"), gemini())) == (200, error)


async def test_gemini_garbage(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post(generate("gemini-garbage"), json=gemini()) as resp:
        assert resp.status == 200
        raw = await resp.read()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    url = generate("gemini-garbage", stream=True, query="?alt=sse")
    async with client.post(url, json=gemini()) as resp:
        assert (await resp.read()) == b"data: {not json\n\n"


@pytest.mark.parametrize("query", ["?alt=sse", ""])
async def test_gemini_stream_cut(aiohttp_client: Any, query: str) -> None:
    client = await mock_client(aiohttp_client)
    chunks: list[bytes] = []
    url = generate("gemini-stream-cut", stream=True, query=query)
    client.server.app[MOCK_STATE].cut_gate = gate = asyncio.Event()
    async with client.post(url, json=gemini()) as resp:
        assert resp.status == 200
        gate.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await read_into(resp.content.iter_any(), chunks)
    raw = b"".join(chunks)
    assert raw.count(b'"text"') == 2
    assert b"finishReason" not in raw
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post(generate("gemini-stream-cut"), json=gemini())


async def test_gemini_models_listing(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.get("/v1beta/models") as resp:
        data = await resp.json()
    names = [m["name"] for m in data["models"]]
    assert "models/gemini-1.5-flash" in names
    assert "generateContent" in data["models"][0]["supportedGenerationMethods"]


# --- Shared: recording, hangs, disconnects -------------------------------------------------


async def test_requests_of_all_apis_are_recorded(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client)
    async with client.post("/v1/chat/completions?x=1", json={"model": "m", "messages": []}):
        pass
    await post_claude(client, claude(), {"x-api-key": "sk-ant"})
    url = generate("gemini-x", stream=True, query="?alt=sse&key=AIza")
    async with client.post(url, json=gemini(), headers={"x-goog-api-key": "AIza"}) as resp:
        await resp.read()
    async with client.get("/_mock/requests") as resp:
        recorded = await resp.json()
    assert [(r["api"], r["path"], r["query"]) for r in recorded] == [
        ("openai", "/v1/chat/completions", "x=1"),
        ("anthropic", "/v1/messages", ""),
        ("gemini", "/v1beta/models/gemini-x:streamGenerateContent", "alt=sse&key=AIza"),
    ]
    assert recorded[1]["headers"]["x-api-key"] == "sk-ant"
    assert recorded[1]["headers"]["anthropic-version"] == "2023-06-01"
    assert recorded[1]["body"] == claude()
    assert recorded[2]["headers"]["x-goog-api-key"] == "AIza"
    assert recorded[2]["body"] == gemini()


@pytest.mark.parametrize(
    ("url", "body", "headers"),
    [
        (MESSAGES, claude("claude-hang"), VERSION),
        (generate("gemini-hang"), gemini(), {}),
    ],
    ids=["anthropic", "gemini"],
)
async def test_hang_then_client_cancel_counts_a_disconnect(
    aiohttp_client: Any, url: str, body: dict[str, Any], headers: dict[str, str]
) -> None:
    client = await mock_client(aiohttp_client)
    state = client.app[MOCK_STATE]
    request = asyncio.create_task(client.post(url, json=body, headers=headers))
    async with asyncio.timeout(5):
        await state.wait_for_requests(1)
        request.cancel()
        await state.wait_for_disconnects(1)
    assert state.disconnects == 1
    with pytest.raises(asyncio.CancelledError):
        await request


async def test_fail_setting_applies_to_every_api(aiohttp_client: Any) -> None:
    client = await mock_client(aiohttp_client, MockSettings(fail="http-503"))
    status, data = await post_claude(client, claude())
    assert (status, data["error"]["type"]) == (529, "overloaded_error")
    status, data = await post_gemini(client, generate(), gemini())
    assert (status, data["error"]["status"]) == (503, "UNAVAILABLE")
