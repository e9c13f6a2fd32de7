"""The Anthropic Messages inbound (``gearshift.inbound.messages``) against the official
``anthropic`` SDK: its requests decode, and its own types and stream accumulator accept
what gearshift answers (strict response validation, over a mock transport: no network)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import orjson
import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from gearshift import sse
from gearshift.config import load
from gearshift.errors import (
    BadRequest,
    CircuitOpen,
    GearshiftError,
    ModelNotFound,
    NoTarget,
    PayloadTooLarge,
    RateLimited,
    Rejected,
    Timeout,
    Unauthorized,
    Unavailable,
)
from gearshift.inbound import messages
from gearshift.inbound.chat import ChatRequest, Limits
from gearshift.providers import anthropic as anthropic_adapter
from gearshift.providers import carry, shapes
from gearshift.routing import tokens

EVENT = pydantic.TypeAdapter(RawMessageStreamEvent)
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
THINKING = [
    {"type": "thinking", "thinking": "Need the weather.", "signature": "c2lnMQ=="},
    {"type": "redacted_thinking", "data": "UkVEQUNURUQ="},
]
UPSTREAM = "claude-sonnet-4-5-20250929"


def _usage(prompt: int, completion: int, cached: int = 0, write: int = 0) -> dict[str, Any]:
    return shapes.usage(prompt, completion, cached=cached, cache_write=write)


def _completion(message: dict[str, Any], finish: str, usage: dict[str, Any]) -> bytes:
    return shapes.completion("chatcmpl-1", "gpt-4o-mini", [(message, finish)], usage)


def _chat_stream(
    texts: list[str], calls: list[tuple[str, str, list[str]]], finish: str
) -> list[bytes]:
    """Chat SSE pieces as the relay yields them: role and text chunks, tool calls with their
    arguments over many deltas, the finish, the usage chunk with ``gearshift``, ``[DONE]``."""
    chunks = shapes.Chunks("chatcmpl-1", "gpt-4o-mini")
    pieces = [chunks.delta({"content": text}) for text in texts]
    for k, (call_id, name, fragments) in enumerate(calls):
        head = {"index": k, **shapes.tool_call(call_id, name, "")}
        pieces.append(chunks.delta({"tool_calls": [head]}))
        for fragment in fragments:
            delta = {"tool_calls": [{"index": k, "function": {"arguments": fragment}}]}
            pieces.append(chunks.delta(delta))
    pieces.append(chunks.delta({}, finish))
    usage = chunks.usage(_usage(120, 30, cached=100))
    pieces.append(sse.encode(usage[:-1] + b',"gearshift":{"cost_usd":0.001,"tier":"small"}}'))
    pieces.append(chunks.done())
    return pieces


def _client(handler: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        api_key="gs-test",
        base_url="http://gearshift.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
        _strict_response_validation=True,
    )


def _answering(answer: Callable[[ChatRequest], tuple[int, bytes, str]]) -> Any:
    """A fake gearshift: the SDK's request parsed with ``messages.parse``, ``answer``'s bytes
    sent back; the parsed requests are kept in ``seen``."""
    seen: list[ChatRequest] = []

    def handler(request: httpx2.Request) -> httpx2.Response:
        chat = messages.parse(request.read())
        seen.append(chat)
        status, body, kind = answer(chat)
        return httpx2.Response(status, content=body, headers={"content-type": kind})

    return handler, seen


def _events(raw: bytes) -> list[Any]:
    framer = sse.Framer()
    out = []
    for event in framer.feed(raw):
        parsed = sse.parse(event)
        assert parsed is not None
        data = orjson.loads(parsed.data)
        assert parsed.name == data["type"]
        out.append(data)
    assert framer.pending == b""
    return out


# ---------------------------------------------------------------- the SDK, whole answers


def test_sdk_create_decodes_and_validates_the_answer() -> None:
    def answer(chat: ChatRequest) -> tuple[int, bytes, str]:
        calls = [shapes.tool_call("toolu_01", "get_weather", '{"city": "Paris"}')]
        completion = _completion(shapes.message("Checking.", calls), "tool_calls", _usage(50, 9))
        return 200, messages.encode(completion, chat, "msg_01", chat.model), "application/json"

    handler, seen = _answering(answer)
    message = _client(handler).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[{"name": "get_weather", "description": "Weather", "input_schema": WEATHER}],
        tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        metadata={"user_id": "u-1"},
        extra_body={"top_k": 5},
    )
    assert isinstance(message, Message)
    assert message.model == "claude-sonnet-4-5"
    assert message.stop_reason == "tool_use"
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.usage.input_tokens == 50
    assert message.usage.output_tokens == 9
    body = seen[0].body
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["parallel_tool_calls"] is False
    assert body["user"] == "u-1"
    assert "top_k" not in body
    assert b"cache_control" not in orjson.dumps(body)


@pytest.mark.parametrize(
    ("message", "finish", "usage"),
    [
        (shapes.message("Hello", []), "stop", _usage(10, 2)),
        (shapes.message("", []), "stop", None),
        (shapes.message("cut", []), "length", _usage(10, 2, cached=4, write=3)),
        ({"role": "assistant", "content": None, "refusal": "No."}, "content_filter", None),
        (
            shapes.message(
                None,
                [
                    shapes.tool_call(carry.wrap("toolu_A", UPSTREAM, {"a": THINKING}), "f", "{}"),
                    shapes.tool_call(carry.wrap("call_G", "gemini-3", {"g": "c2ln"}), "f", "[1]"),
                ],
            ),
            "tool_calls",
            _usage(10, 2),
        ),
    ],
)
def test_encode_validates_as_an_sdk_message(
    message: dict[str, Any], finish: str, usage: dict[str, Any] | None
) -> None:
    chat = messages.parse(orjson.dumps(_request()))
    out = Message.model_validate(
        orjson.loads(messages.encode(_completion(message, finish, usage), chat, "msg_x", "auto"))
    )
    assert out.id == "msg_x"
    assert out.model == "auto"
    assert out.stop_reason is not None


def test_encode_emits_carried_thinking_and_keeps_other_state() -> None:
    chat = messages.parse(orjson.dumps(_request()))
    gemini = carry.wrap("call_G", "gemini-3", {"g": "c2ln"})
    calls = [
        shapes.tool_call(carry.wrap("toolu_A", UPSTREAM, {"a": THINKING}), "get_weather", "{}"),
        shapes.tool_call(gemini, "get_weather", '{"city": "Oslo"}'),
    ]
    completion = _completion(shapes.message("On it.", calls), "tool_calls", _usage(10, 2))
    out = Message.model_validate(orjson.loads(messages.encode(completion, chat, "m", "x")))
    kinds = [(b.type, getattr(b, "id", None)) for b in out.content]
    assert kinds == [
        ("thinking", None),
        ("redacted_thinking", None),
        ("text", None),
        ("tool_use", "toolu_A"),
        ("tool_use", gemini),
    ]


# ---------------------------------------------------------------- the SDK, streams


def test_sdk_stream_accumulates_the_final_message() -> None:
    carried = carry.wrap("toolu_A", UPSTREAM, {"a": THINKING})
    pieces = _chat_stream(
        ["Let me", " check", " both."],
        [
            (carried, "get_weather", ["", '{"ci', 'ty": "Par', 'is"}']),
            ("toolu_B", "get_weather", ['{"city"', ': "Rome"}']),
        ],
        "tool_calls",
    )

    def answer(chat: ChatRequest) -> tuple[int, bytes, str]:
        assert chat.stream
        assert chat.body["stream_options"] == {"include_usage": True}
        encoder = messages.StreamEncoder(chat, "msg_s", chat.model, input_tokens=115)
        out = b"".join(encoder.feed(p) for p in pieces) + encoder.end()
        for event in _events(out):
            EVENT.validate_python(event)
        return 200, out, "text/event-stream"

    handler, _ = _answering(answer)
    with _client(handler).messages.stream(
        model="claude-sonnet-4-5",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
    ) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Let me check both."
    assert [b.type for b in final.content] == [
        "text",
        "thinking",
        "redacted_thinking",
        "tool_use",
        "tool_use",
    ]
    thinking = final.content[1]
    assert thinking.type == "thinking"
    assert thinking.thinking == "Need the weather."
    assert thinking.signature == "c2lnMQ=="
    tools = [b for b in final.content if b.type == "tool_use"]
    assert [(t.id, t.input) for t in tools] == [
        ("toolu_A", {"city": "Paris"}),
        ("toolu_B", {"city": "Rome"}),
    ]
    assert final.stop_reason == "tool_use"
    usage = final.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens) == (20, 100, 30)


def test_sdk_stream_error_event_raises_with_anthropic_type() -> None:
    chunks = shapes.Chunks("chatcmpl-1", "gpt-4o-mini")
    error = Unavailable("Overloaded", provider="p", code="overloaded_error", status=503)
    pieces = [chunks.delta({"content": "Part"}), b"data: " + error.body() + b"\n\n"]

    def answer(chat: ChatRequest) -> tuple[int, bytes, str]:
        encoder = messages.StreamEncoder(chat, "msg_e", chat.model)
        out = b"".join(encoder.feed(p) for p in pieces) + encoder.end()
        return 200, out, "text/event-stream"

    handler, _ = _answering(answer)
    stream = _client(handler).messages.stream(
        model="claude-sonnet-4-5", max_tokens=10, messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(anthropic.APIStatusError) as caught, stream as events:
        events.get_final_message()
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["error"] == {"type": "overloaded_error", "message": "Overloaded"}


def test_cut_stream_ends_with_an_error_event() -> None:
    chat = messages.parse(orjson.dumps({**_request(), "stream": True}))
    encoder = messages.StreamEncoder(chat, "m", "x")
    out = encoder.feed(shapes.Chunks("c", "m").delta({"content": "Hal"}))
    tail = encoder.end()
    events = _events(out + tail)
    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "error",
    ]
    assert events[-1]["error"]["type"] == "api_error"
    assert encoder.end() == b""
    assert encoder.feed(b"data: [DONE]\n\n") == b""
    for event in events[:-1]:
        EVENT.validate_python(event)
    anthropic.types.ErrorResponse.model_validate(events[-1])  # not a RawMessageStreamEvent


def test_stream_split_anywhere_gives_the_same_events() -> None:
    chat = messages.parse(orjson.dumps({**_request(), "stream": True}))
    pieces = _chat_stream(["a", " b", " c"], [("toolu_1", "f", ['{"x"', ": 1}"])], "tool_calls")
    raw = b"".join(pieces)
    whole = messages.StreamEncoder(chat, "m", "x")
    expected = whole.feed(raw) + whole.end()
    split = messages.StreamEncoder(chat, "m", "x")
    out = b"".join(split.feed(raw[i : i + 7]) for i in range(0, len(raw), 7)) + split.end()
    assert out == expected
    assert _events(out)[0]["message"]["usage"]["input_tokens"] == 0
    assert _events(out)[-1] == {"type": "message_stop"}


def test_ping_before_the_message_starts_is_dropped() -> None:
    chat = messages.parse(orjson.dumps({**_request(), "stream": True}))
    encoder = messages.StreamEncoder(chat, "m", "x")
    assert encoder.feed(b": ping\n\n") == b""
    encoder.feed(shapes.Chunks("c", "m").delta({"content": "Hi"}))
    assert encoder.feed(b": ping\n\n") == b'event: ping\ndata: {"type":"ping"}\n\n'


# ---------------------------------------------------------------- errors through the SDK


@pytest.mark.parametrize(
    ("error", "status", "kind", "sdk_error"),
    [
        (BadRequest("max_tokens: Field required"), 400, "invalid_request_error", "BadRequestError"),
        (Unauthorized("Invalid API key."), 401, "authentication_error", "AuthenticationError"),
        (
            Rejected("no", provider="p", status=403),
            403,
            "permission_error",
            "PermissionDeniedError",
        ),
        (ModelNotFound("model: x", provider="p"), 404, "not_found_error", "NotFoundError"),
        (PayloadTooLarge("too big"), 413, "request_too_large", "ContentTooLargeError"),
        (RateLimited("slow", provider="p"), 429, "rate_limit_error", "RateLimitError"),
        (Unavailable("down", provider="p"), 500, "api_error", "InternalServerError"),
        (Unavailable("busy", provider="p", status=503), 529, "overloaded_error", "OverloadedError"),
        (CircuitOpen("open"), 529, "overloaded_error", "OverloadedError"),
        (Timeout("slow", provider="p"), 504, "timeout_error", "GatewayTimeoutError"),
        (NoTarget("none"), 500, "api_error", "InternalServerError"),
    ],
)
def test_error_body_is_what_the_sdk_expects(
    error: GearshiftError, status: int, kind: str, sdk_error: str
) -> None:
    got_status, body = messages.error_body(error, request_id="req_1")
    assert got_status == status
    doc = orjson.loads(body)
    assert doc == {
        "type": "error",
        "error": {"type": kind, "message": error.message},
        "request_id": "req_1",
    }
    if kind != "request_too_large":  # Anthropic's documented 413 type; not in the SDK's union
        anthropic.types.ErrorResponse.model_validate(doc)

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(got_status, content=body, headers={"content-type": "json"})

    with pytest.raises(getattr(anthropic, sdk_error)) as caught:
        _client(handler).messages.create(
            model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.status_code == status


# ---------------------------------------------------------------- requests


def _request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


def _agentic_request() -> dict[str, Any]:
    """The shape an agentic coding tool sends: cached system blocks, ~20 tools (the last
    one cached), thinking on, streaming, a session in ``metadata.user_id``, beta fields."""
    tools = [
        {
            "name": f"Tool{i}",
            "description": f"Does thing {i}. " * 20,
            "input_schema": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"path": {"type": "string"}, "limit": {"type": "number"}},
                "required": ["path"],
                "additionalProperties": False,
            },
        }
        for i in range(20)
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    reminder = {"type": "text", "text": "<system-reminder>Todo list is empty.</system-reminder>"}
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "stream": True,
        "temperature": 1,
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "metadata": {"user_id": "user_abc_account_123_session_456"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "system": [
            {
                "type": "text",
                "text": "You are Claude Code.",
                "cache_control": {"type": "ephemeral"},
            },
            {
                "type": "text",
                "text": "Instructions. " * 500,
                "cache_control": {"type": "ephemeral"},
            },
        ],
        "tools": tools,
        "messages": [
            {
                "role": "user",
                "content": [reminder, {"type": "text", "text": "Fix the failing test."}],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "Read it first.", "signature": "c2ln"},
                    {"type": "text", "text": "Reading the test."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": "Tool3",
                        "input": {"path": "t.py"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_01",
                        "content": [{"type": "text", "text": "def test(): assert 1 == 2"}],
                        "cache_control": {"type": "ephemeral"},
                    }
                ],
            },
        ],
    }


def test_agentic_coding_request_decodes() -> None:
    chat = messages.parse(orjson.dumps(_agentic_request()))
    body = chat.body
    assert chat.stream
    assert chat.client_wants_usage
    assert chat.carried
    assert body["reasoning_effort"] == "high"
    assert body["max_tokens"] == 32000
    assert body["user"] == "user_abc_account_123_session_456"
    assert len(body["tools"]) == 20
    assert body["tools"][0]["function"]["parameters"]["required"]
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool"]
    assert b"cache_control" not in orjson.dumps(body)
    assert "context_management" not in body
    call_id = body["messages"][2]["tool_calls"][0]["id"]
    assert body["messages"][3]["tool_call_id"] == call_id
    assert carry.unwrap(call_id) == (
        "toolu_01",
        {"m": "", "a": [{"type": "thinking", "thinking": "Read it first.", "signature": "c2ln"}]},
    )


def test_thinking_round_trip_reaches_the_anthropic_upstream() -> None:
    """Blocks gearshift gave a Messages client come back on the tool-call id, and the
    Anthropic adapter puts them back before their tool_use (``m`` empty: any model)."""
    chat = messages.parse(orjson.dumps(_request()))
    calls = [shapes.tool_call(carry.wrap("toolu_A", UPSTREAM, {"a": THINKING}), "f", "{}")]
    completion = _completion(shapes.message("On it.", calls), "tool_calls", _usage(1, 1))
    answer = orjson.loads(messages.encode(completion, chat, "m", "x"))
    follow_up = _request(
        messages=[
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": answer["content"]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_A", "content": "ok"}],
            },
        ]
    )
    back = messages.parse(orjson.dumps(follow_up))
    config = load(None, environ={"ANTHROPIC_API_KEY": "sk-ant-test-0123456789"})
    model = next(m for m in config.models.values() if m.provider.kind == "anthropic")
    upstream = orjson.loads(anthropic_adapter.encode_request(back, model).body)
    turn = upstream["messages"][1]
    assert turn["role"] == "assistant"
    assert turn["content"] == [
        *THINKING,
        {"type": "text", "text": "On it."},
        {"type": "tool_use", "id": "toolu_A", "name": "f", "input": {}},
    ]
    result = upstream["messages"][2]["content"][0]
    assert result == {"type": "tool_result", "tool_use_id": "toolu_A", "content": "ok"}


def test_other_providers_state_survives_the_round_trip() -> None:
    gemini = carry.wrap("call_G", "gemini-3", {"g": "c2ln"})
    follow_up = _request(
        messages=[
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "t", "signature": "s"},
                    {"type": "tool_use", "id": gemini, "name": "f", "input": {}},
                ],
            },
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": gemini}]},
        ]
    )
    body = messages.parse(orjson.dumps(follow_up)).body
    assert body["messages"][1]["tool_calls"][0]["id"] == gemini  # not wrapped twice
    assert body["messages"][2] == {"role": "tool", "tool_call_id": gemini, "content": ""}


def test_not_streaming_still_reports_usage() -> None:
    chat = messages.parse(orjson.dumps(_request()))
    assert chat.client_wants_usage
    assert not chat.stream
    assert "stream_options" not in chat.body


def test_limits_apply() -> None:
    many = _request(messages=[{"role": "user", "content": f"m{i}"} for i in range(10)])
    with pytest.raises(BadRequest) as caught:
        messages.parse(orjson.dumps(many), Limits(max_messages=5))
    assert caught.value.code == "too_many_messages"
    with pytest.raises(BadRequest) as caught:  # refused before parsing
        messages.parse(orjson.dumps(many) + b" " * 100, Limits(max_messages=2))
    assert caught.value.code == "too_many_messages"


def test_deeply_nested_tool_input_is_refused_cleanly() -> None:
    # Built by hand: orjson cannot encode 300 levels, and neither can the chat body.
    body = b'{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"go"},'
    body += b'{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":'
    body += b'{"a":' * 300 + b"{}" + b"}" * 300 + b"}]}]}"
    with pytest.raises(BadRequest) as caught:
        messages.parse(body)
    assert caught.value.code == "nesting_too_deep"


def test_count_tokens_needs_no_max_tokens() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "Count these words."}]}
    out = orjson.loads(messages.count_tokens(orjson.dumps(request)))
    chat = {"messages": [{"role": "user", "content": "Count these words."}]}
    assert out == {"input_tokens": tokens.count_request(chat)}
    with pytest.raises(BadRequest):
        messages.count_tokens(b'{"messages": []}')


@pytest.mark.parametrize(
    ("thinking", "config", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, None, "low"),
        ({"type": "enabled", "budget_tokens": 2048}, None, "medium"),
        ({"type": "enabled", "budget_tokens": 12000}, None, "high"),
        ({"type": "enabled", "budget_tokens": 32000}, None, "xhigh"),
        ({"type": "enabled", "budget_tokens": 0}, None, "none"),
        ({"type": "enabled", "budget_tokens": 5000}, {"effort": "max"}, "max"),
        ({"type": "adaptive"}, None, None),
        ({"type": "adaptive"}, {"effort": "xhigh"}, "xhigh"),
        ({"type": "disabled"}, {"effort": "low"}, "none"),
        (None, {"effort": "medium"}, "medium"),
    ],
)
def test_thinking_to_effort(thinking: Any, config: Any, effort: str | None) -> None:
    extra: dict[str, Any] = {}
    if thinking is not None:
        extra["thinking"] = thinking
    if config is not None:
        extra["output_config"] = config
    body = messages.parse(orjson.dumps(_request(**extra))).body
    assert body.get("reasoning_effort") == effort


def test_tool_input_deeper_than_the_limit_is_refused() -> None:
    deep: Any = {}
    for _ in range(40):
        deep = {"a": [deep]}
    turn = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": deep}],
    }
    request = _request(messages=[{"role": "user", "content": "go"}, turn])
    with pytest.raises(BadRequest) as caught:
        messages.parse(orjson.dumps(request), Limits(max_nesting=64))
    assert caught.value.code == "nesting_too_deep"
    assert messages.parse(orjson.dumps(request)).body["messages"][1]["tool_calls"]
