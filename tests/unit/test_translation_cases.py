"""Checklist cases not covered by a golden fixture: unparsable tool arguments, PDFs, URLs."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
from conftest import fed

from gearshift.config import catalog_2024, load
from gearshift.errors import Unavailable, Unsupported
from gearshift.inbound.chat import parse_chat
from gearshift.providers import anthropic, gemini

CONFIG = load(None, environ={"ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g"}, base=catalog_2024())
HAIKU = CONFIG.models["claude-3-haiku"]
FLASH = CONFIG.models["gemini-1.5-flash"]


def _body(module: Any, model: Any, messages: list[Any], **extra: Any) -> dict[str, Any]:
    request = parse_chat(orjson.dumps({"model": "auto", "messages": messages, **extra}))
    doc: dict[str, Any] = orjson.loads(module.encode_request(request, model).body)
    return doc


BROKEN_CALL = [
    {"role": "user", "content": "weather?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "w", "arguments": '{"city": "Par'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
]


def test_unparsable_tool_arguments_are_kept_raw_not_a_crash() -> None:
    body = _body(anthropic, HAIKU, BROKEN_CALL)
    assert body["messages"][1]["content"][0]["input"] == {"_raw": '{"city": "Par'}
    body = _body(gemini, FLASH, BROKEN_CALL)
    assert body["contents"][1]["parts"][0]["functionCall"]["args"] == {"_raw": '{"city": "Par'}


def test_a_pdf_data_url_becomes_an_anthropic_document_block() -> None:
    pdf = {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBERi0x"}}
    messages = [{"role": "user", "content": [{"type": "text", "text": "sum up"}, pdf]}]
    block = _body(anthropic, HAIKU, messages)["messages"][0]["content"][1]
    assert block == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0x"},
    }


def test_gemini_max_output_is_capped_at_the_model_maximum() -> None:
    body = _body(gemini, FLASH, [{"role": "user", "content": "hi"}], max_tokens=10**6)
    assert body["generationConfig"]["maxOutputTokens"] == FLASH.spec.max_output


# ---------------------------------------------------------------- review findings


def _stream(module: Any, model: Any, events: list[bytes], **extra: Any) -> tuple[Any, bytes]:
    request = parse_chat(
        orjson.dumps(
            {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
            | extra
        )
    )
    decoder = module.stream_decoder(request, model)
    out = b"".join(fed(decoder, e) for e in events)
    return decoder, out + fed(decoder, None)


def _ev(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


START = _ev(
    "message_start",
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1},
        },
    },
)


def _payloads(out: bytes) -> list[Any]:
    return [
        orjson.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]"
        for line in out.split(b"\n")
        if line.startswith(b"data: ")
    ]


def test_a_streamed_tool_call_without_arguments_ends_with_an_empty_object() -> None:
    tool = {"type": "tool_use", "id": "toolu_1", "name": "now", "input": {}}
    events = [
        START,
        _ev(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": tool},
        ),
        _ev(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
        ),
        _ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 3},
            },
        ),
        _ev("message_stop", {"type": "message_stop"}),
    ]
    _, out = _stream(anthropic, HAIKU, events)
    arguments = "".join(
        d["function"].get("arguments", "")
        for p in _payloads(out)
        if p != "[DONE]" and p["choices"]
        for d in p["choices"][0]["delta"].get("tool_calls", [])
    )
    assert orjson.loads(arguments) == {}


def test_streamed_usage_keeps_input_and_cache_counts_when_a_delta_says_null() -> None:
    events = [
        START,
        _ev(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": "hi"},
            },
        ),
        _ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn"},
                "usage": {
                    "output_tokens": 5,
                    "input_tokens": None,
                    "cache_read_input_tokens": None,
                },
            },
        ),
        _ev("message_stop", {"type": "message_stop"}),
    ]
    decoder, _ = _stream(anthropic, HAIKU, events)
    assert decoder.state.usage["prompt_tokens"] == 110
    assert decoder.state.usage["prompt_tokens_details"]["cached_tokens"] == 100
    assert decoder.state.usage["completion_tokens"] == 5


def test_no_byte_goes_out_before_content_so_an_early_error_can_fall_back() -> None:
    ping = _ev("ping", {"type": "ping"})
    error = _ev(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    decoder = anthropic.stream_decoder(_stream_request(), HAIKU)
    assert decoder.feed(START) == b""
    assert decoder.feed(ping) == b"", "a ping before content does not commit the stream"
    assert decoder.feed(error) == b""
    assert decoder.state.error is not None
    assert decoder.state.error.retryable


def _stream_request() -> Any:
    return parse_chat(
        orjson.dumps(
            {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
        )
    )


def test_anthropic_gets_no_whitespace_stop_and_not_both_temperature_and_top_p() -> None:
    body = _body(
        anthropic,
        HAIKU,
        [{"role": "user", "content": "hi"}],
        stop=["\n", "END"],
        temperature=0.2,
        top_p=0.5,
    )
    assert body["stop_sequences"] == ["END"]
    assert (body["temperature"], "top_p" in body) == (0.2, False)
    body = _body(anthropic, HAIKU, [{"role": "user", "content": "hi"}], stop="\n\n", top_p=0.5)
    assert "stop_sequences" not in body
    assert body["top_p"] == 0.5


def test_anthropic_tool_ids_are_made_valid_and_unique_consistently() -> None:
    def turn(call_id: str) -> list[Any]:
        return [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "w", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "ok"},
        ]

    messages = [
        {"role": "user", "content": "go"},
        *turn("functions.get:0"),
        *turn("call_0"),
        *turn("call_0"),
    ]
    body = _body(anthropic, HAIKU, messages)
    uses = [b["id"] for m in body["messages"] for b in m["content"] if b["type"] == "tool_use"]
    results = [
        b["tool_use_id"]
        for m in body["messages"]
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert uses == results
    assert len(set(uses)) == 3
    assert uses[1] == "call_0", "a valid id is kept"
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in uses)


def test_gemini_gets_no_penalties_and_json_mode_beside_tools_as_an_instruction() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "w",
                "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
        }
    ]
    body = _body(
        gemini,
        FLASH,
        [{"role": "user", "content": "hi"}],
        presence_penalty=0,
        frequency_penalty=0.5,
        tools=tools,
        response_format={"type": "json_object"},
    )
    config = body.get("generationConfig", {})
    assert not {"presencePenalty", "frequencyPenalty", "responseMimeType"} & set(config)
    assert "JSON" in body["systemInstruction"]["parts"][0]["text"]


def test_gemini_schemas_inline_refs_and_turn_type_lists_into_nullable() -> None:
    schema = {
        "type": "object",
        "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}}},
        "properties": {"item": {"$ref": "#/$defs/Item"}, "note": {"type": ["string", "null"]}},
    }
    out = gemini.sanitize_schema(schema)
    assert out["properties"]["item"] == {
        "type": "object",
        "properties": {"sku": {"type": "string"}},
    }
    assert out["properties"]["note"] == {"type": "string", "nullable": True}
    assert "$defs" not in out


def test_gemini_conversations_end_on_a_user_turn_and_refuse_the_function_role() -> None:
    messages = [
        {"role": "user", "content": "write a poem"},
        {"role": "assistant", "content": "Roses"},
    ]
    contents = _body(gemini, FLASH, messages)["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[-1]["parts"] == [{"text": gemini.CONTINUE}]
    with pytest.raises(Unsupported):
        _body(
            gemini,
            FLASH,
            [{"role": "user", "content": "x"}, {"role": "function", "name": "f", "content": "1"}],
        )


def test_a_gemini_stream_with_two_candidates_is_complete_only_when_both_finish() -> None:
    def chunk(index: int, text: str, finish: str | None = None) -> bytes:
        candidate: dict[str, Any] = {
            "index": index,
            "content": {"role": "model", "parts": [{"text": text}]},
        }
        if finish:
            candidate["finishReason"] = finish
        return b"data: " + orjson.dumps({"candidates": [candidate], "responseId": "r"}) + b"\n\n"

    decoder, out = _stream(gemini, FLASH, [chunk(0, "a", "STOP"), chunk(1, "b")], n=2)
    assert not decoder.state.finished, "candidate 1 never finished: a cut, not a clean end"
    assert b"[DONE]" not in out
    decoder, out = _stream(gemini, FLASH, [chunk(0, "a", "STOP"), chunk(1, "b", "STOP")], n=2)
    assert decoder.state.finished
    assert out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("module", "status", "body", "client_status", "retryable"),
    [
        (
            gemini,
            400,
            {
                "error": {
                    "code": 400,
                    "message": "API key expired.",
                    "status": "INVALID_ARGUMENT",
                    "details": [{"reason": "API_KEY_EXPIRED"}],
                }
            },
            401,
            True,  # gearshift's key: another provider may serve it
        ),
        (
            gemini,
            400,
            {
                "error": {
                    "code": 400,
                    "message": "User location is not supported.",
                    "status": "FAILED_PRECONDITION",
                }
            },
            503,
            True,
        ),
        (
            anthropic,
            402,
            {
                "type": "error",
                "error": {"type": "billing_error", "message": "Check your payment details."},
            },
            503,
            True,  # gearshift's account cannot pay: another provider may serve it
        ),
        (
            anthropic,
            400,
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "message": "Your credit balance is too low to access the Anthropic API.",
                },
            },
            400,
            False,  # classified by status and type, never by the message's words
        ),
        (
            anthropic,
            400,
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "messages: bad"},
            },
            400,
            False,
        ),
    ],
)
def test_provider_account_problems_are_not_the_clients_fault(
    module: Any, status: int, body: Any, client_status: int, retryable: bool
) -> None:
    provider = (FLASH if module is gemini else HAIKU).provider
    error = module.decode_error(status, {}, orjson.dumps(body), provider)
    assert (error.status, error.retryable) == (client_status, retryable)
    assert error.upstream_status == status


def test_an_anthropic_billing_error_in_a_stream_is_the_providers_failure() -> None:
    event = {"type": "error", "error": {"type": "billing_error", "message": "Pay up."}}
    decoder, out = _stream(anthropic, HAIKU, [b"event: error\ndata: " + orjson.dumps(event)])
    assert out == b""
    error = decoder.state.error
    assert isinstance(error, Unavailable)
    assert (error.status, error.retryable, error.code) == (503, True, "provider_billing")
    assert (error.upstream_status, error.message) == (402, "Pay up.")


def test_a_file_part_with_a_pdf_reaches_both_providers() -> None:
    pdf = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"},
    }
    messages = [{"role": "user", "content": [{"type": "text", "text": "sum up"}, pdf]}]
    block = _body(anthropic, HAIKU, messages)["messages"][0]["content"][1]
    assert block["type"] == "document"
    part = _body(gemini, FLASH, messages)["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}}
    by_id = {"type": "file", "file": {"file_id": "file-abc"}}
    with pytest.raises(Unsupported, match="file_id"):
        _body(anthropic, HAIKU, [{"role": "user", "content": [by_id]}])
