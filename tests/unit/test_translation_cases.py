"""Checklist cases not covered by a golden fixture: unparsable tool arguments, PDFs, URLs."""

from __future__ import annotations

from typing import Any

import orjson

from gearshift.config import load
from gearshift.providers import anthropic, gemini
from gearshift.request import parse_chat

CONFIG = load(None, environ={"ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g"})
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
