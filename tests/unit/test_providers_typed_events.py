"""Stream events decoded into typed Structs: Anthropic's tagged events (an event type added
later is ignored, a field of the wrong type is ``malformed_stream``), Gemini's plain
``GenerateContentResponse`` chunks (unknown fields skipped), and the framings both accept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from conftest import fed
from hypothesis import given, settings
from hypothesis import strategies as st

from gearshift import sse
from gearshift.config import catalog_2024, load
from gearshift.errors import ProtocolError, RateLimited
from gearshift.inbound.chat import parse_chat
from gearshift.providers import anthropic, gemini

CONFIG = load(None, environ={"ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g"}, base=catalog_2024())
HAIKU = CONFIG.models["claude-3-haiku"]
FLASH = CONFIG.models["gemini-1.5-flash"]


def _decoder(module: Any, model: Any, **extra: Any) -> Any:
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    return module.stream_decoder(parse_chat(orjson.dumps(body | extra)), model)


def named(doc: dict[str, Any], name: str | None = None) -> bytes:
    """An event framed as Anthropic frames it."""
    return f"event: {name or doc['type']}\n".encode() + b"data: " + orjson.dumps(doc) + b"\n\n"


START = named({"type": "message_start", "message": {"id": "msg_1", "model": "claude"}})


def _text(out: bytes) -> str:
    """The content a client assembles from OpenAI SSE bytes."""
    text = ""
    for line in out.split(b"\n"):
        if line.startswith(b"data: {"):
            for choice in orjson.loads(line[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def _delta(text: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }


# ---------------------------------------------------------------- Anthropic


@pytest.mark.parametrize("before_start", [True, False])
def test_an_anthropic_event_type_added_later_is_ignored(before_start: bool) -> None:
    decoder = _decoder(anthropic, HAIKU)
    later = named({"type": "content_block_citation", "index": 0, "whatever": [1, {"a": None}]})
    events = [later, START] if before_start else [START, later]
    out = b"".join(fed(decoder, e) for e in [*events, named(_delta("Hi"))])
    assert decoder.state.error is None
    assert _text(out) == "Hi"


def test_unknown_fields_and_block_or_delta_kinds_are_skipped() -> None:
    decoder = _decoder(anthropic, HAIKU)
    thinking = {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking"}}
    events = [
        named(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "content": [],
                    "usage": {"input_tokens": 3, "cache_creation": {"x": 1}, "service_tier": "s"},
                },
            }
        ),
        named(thinking),
        named({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta"}}),
        named({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta"}}),
        named(_delta("ok") | {"extra": {"nested": True}}),
        named({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": None}),
        named({"type": "message_delta", "usage": {"input_tokens": None, "output_tokens": 2}}),
        named({"type": "message_stop"}),
    ]
    out = b"".join(fed(decoder, e) for e in events)
    assert decoder.state.error is None
    assert decoder.state.finished
    assert _text(out) == "ok"
    usage = decoder.state.usage
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (3, 2), "null erases nothing"


@pytest.mark.parametrize(
    "doc",
    [
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": 5}},
        {"type": "content_block_delta", "index": "0", "delta": {"type": "text_delta"}},
        {"type": "content_block_delta", "index": 0},
        {"type": "content_block_start", "index": 0},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "id": 7}},
        {"type": "message_delta", "usage": {"output_tokens": "2"}},
        {"type": "message_delta", "delta": []},
    ],
)
def test_an_anthropic_field_of_the_wrong_type_is_a_malformed_stream(doc: dict[str, Any]) -> None:
    decoder = _decoder(anthropic, HAIKU)
    assert fed(decoder, START) == b""
    assert fed(decoder, named(doc)) == b""
    error = decoder.state.error
    assert isinstance(error, ProtocolError)
    assert error.code == "malformed_stream"
    assert doc["type"] in error.message


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"event: content_block_delta\ndata: {cut in the mid\n\n", "not JSON"),
        (b"event: content_block_delta\ndata: [1, 2]\n\n", "not an object"),
        (b'data: {"index": 0}\n\n', "None before message_start"),
    ],
)
def test_anthropic_events_that_are_no_event_are_malformed(raw: bytes, why: str) -> None:
    decoder = _decoder(anthropic, HAIKU)
    assert fed(decoder, raw) == b""
    error = decoder.state.error
    assert isinstance(error, ProtocolError)
    assert error.code == "malformed_stream"
    assert why in error.message


def test_an_event_named_only_by_its_sse_line_and_other_framings() -> None:
    decoder = _decoder(anthropic, HAIKU)
    untyped = b"event: content_block_delta\r\ndata: " + orjson.dumps(
        {"index": 0, "delta": {"type": "text_delta", "text": "a"}}
    )
    events = [
        START.replace(b"\n", b"\r\n"),  # CRLF line ends
        untyped + b"\r\n\r\n",  # the type only in the event: line
        b"data: " + orjson.dumps(_delta("b")) + b"\n\n",  # no event: line
        b"event: content_block_delta\ndata:" + orjson.dumps(_delta("c")) + b"\n\n",  # no space
        b": a comment\n\n",
        b'event: content_block_delta\ndata: {"type":"content_block_delta",\n'
        b'data: "delta":{"type":"text_delta","text":"d"}}\n\n',  # data over two lines
    ]
    out = b"".join(fed(decoder, e) for e in events)
    assert decoder.state.error is None
    assert _text(out) == "abcd"


def test_an_in_band_anthropic_error_keeps_its_class() -> None:
    decoder = _decoder(anthropic, HAIKU)
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    assert fed(decoder, START) + fed(decoder, named(error)) == b""
    assert isinstance(decoder.state.error, RateLimited)
    assert decoder.state.error.message == "slow down"


# ---------------------------------------------------------------- Gemini


def chunk(doc: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(doc) + b"\r\n\r\n"


def test_gemini_chunks_skip_unknown_fields_and_parts() -> None:
    decoder = _decoder(gemini, FLASH, stream_options={"include_usage": True})
    parts = [
        {"text": "thinking…", "thought": True, "thoughtSignature": "c2ln"},
        {"text": "Hel"},
        {"executableCode": {"language": "PYTHON", "code": "1"}},
        {"text": "lo", "citationMetadata": {"citations": []}},
    ]
    events = [
        chunk(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": parts}, "safetyRatings": [{"x": 1}]}
                ],
                "usageMetadata": {"promptTokenCount": 4, "promptTokensDetails": [{"m": "TEXT"}]},
                "modelVersion": "gemini-x",
                "responseId": "r1",
                "createTime": "2026-12-07T00:00:00Z",
            }
        ),
        chunk(
            {
                "candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
            }
        ),
    ]
    out = b"".join(fed(decoder, e) for e in events) + fed(decoder, None)
    assert decoder.state.error is None
    assert decoder.state.finished
    assert _text(out) == "Hello!"
    assert decoder.state.usage["completion_tokens"] == 2
    assert b'"id":"chatcmpl-r1"' in out
    assert b'"model":"gemini-x"' in out


@pytest.mark.parametrize(
    "doc",
    [
        {"candidates": {"0": {}}},
        {"candidates": [{"finishReason": 1}]},
        {"candidates": [{"content": {"parts": [{"text": ["a"]}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"name": "f", "args": [1]}}]}}]},
        {"usageMetadata": {"promptTokenCount": "4"}},
    ],
)
def test_a_gemini_field_of_the_wrong_type_is_a_malformed_stream(doc: dict[str, Any]) -> None:
    decoder = _decoder(gemini, FLASH)
    assert fed(decoder, chunk(doc)) == b""
    error = decoder.state.error
    assert isinstance(error, ProtocolError)
    assert error.code == "malformed_stream"


def test_a_gemini_answer_of_the_wrong_shape_is_a_protocol_error() -> None:
    request = parse_chat(b'{"model":"a","messages":[{"role":"user","content":"x"}]}')
    for body in (b"[]", b"{cut", b'{"candidates": [{"index": "0"}]}'):
        with pytest.raises(ProtocolError):
            gemini.decode_response(body, request, FLASH)
    whole = {"candidates": [{"content": {"parts": [{"text": "ok"}]}, "finishReason": "STOP"}]}
    done = gemini.decode_response(orjson.dumps(whole | {"unknown": {"a": [1]}}), request, FLASH)
    assert orjson.loads(done.body)["choices"][0]["message"]["content"] == "ok"


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    st.lists(
        st.sampled_from(
            [b"event: ", b"data: ", b"data:", b"event:x", b": c", b"{}", b'{"a":1}', b" ", b"x"]
        ),
        max_size=6,
    ),
    st.lists(st.sampled_from([b"\n", b"\r\n", b"\r", b"\n\n", b""]), min_size=6, max_size=6),
)
def test_the_anthropic_framing_shortcut_reads_what_sse_parse_reads(
    pieces: list[bytes], ends: list[bytes]
) -> None:
    raw = b"".join(p + e for p, e in zip(pieces, ends, strict=False)) + b"\n\n"
    data = sse.named_data(raw)
    if data is not None:
        parsed = sse.parse(raw)
        assert parsed is not None
        assert parsed.data == data
    assert sse.named_data(b"event: ping\ndata: {}\n\n") == b"{}"
