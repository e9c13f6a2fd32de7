"""Anthropic reasoning: effort per control, thinking blocks carried in tool-call ids.

The ``carried_*`` files of ``tests/golden/anthropic/reasoning_*`` are checked here rather
than by ``test_golden``: a carried id is an opaque blob (zlib output, which may differ
between zlib builds), so each one is compared as ``{"carried": <plain id>, "state": <what
carry.unwrap reads>}``, the form the expected files are written in. The budget control is
checked here too: no model of the configs the golden harness loads thinks on a budget
(Haiku 4.5 is not in them), so its model is built from a config snippet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import fed
from test_golden import GOLDEN, MODELS, Normaliser, assert_same, sse_items

from gearshift import sse
from gearshift.config import Model, decode, resolve
from gearshift.inbound.chat import parse_chat
from gearshift.providers import anthropic, carry

CASES = [
    GOLDEN / "anthropic" / name for name in ("reasoning_tool_use", "reasoning_stream_tool_use")
]

BUDGET_TOML = """
use_default_catalog = false
[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
api_key = "env:ANTHROPIC_API_KEY"

[[models]]
name = "claude-haiku-4-5"
provider = "anthropic"
upstream_id = "claude-haiku-4-5-20251001"
tier = "light"
price_in = 1
price_out = 5
context_window = 200000
max_output = 64000
[models.reasoning]
efforts = ["none", "minimal", "low", "medium", "high", "xhigh", "max"]
control = "budget"
"""
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def _budget_model() -> Model:
    raw = decode(BUDGET_TOML.encode(), source="budget.toml")
    config = resolve(raw, source="budget.toml", environ={"ANTHROPIC_API_KEY": "sk-ant-test-0"})
    return config.models["claude-haiku-4-5"]


def _uncarry(value: Any) -> Any:
    """Every carried id as ``{"carried": plain id, "state": state}``."""
    if isinstance(value, dict):
        return {k: _uncarry(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_uncarry(v) for v in value]
    if isinstance(value, str) and carry.MARK in value:
        plain, state = carry.unwrap(value)
        assert state is not None, f"unreadable carried id {value!r}"
        return {"carried": plain, "state": state}
    return value


def _encode(body: dict[str, Any], model: Model) -> dict[str, Any]:
    out = anthropic.encode_request(parse_chat(orjson.dumps(body)), model)
    result: dict[str, Any] = orjson.loads(out.body)
    return result


def _ask(**fields: Any) -> dict[str, Any]:
    return {"model": "auto", "messages": [{"role": "user", "content": "Hi"}], **fields}


# ---------------------------------------------------------------- the carried golden files


@pytest.mark.parametrize("case", CASES, ids=lambda p: p.name)
def test_carried_golden(case: Path) -> None:
    meta = orjson.loads((case / "upstream.json").read_bytes())
    model = MODELS[meta["model"]]
    request = parse_chat((case / "client_request.json").read_bytes())
    checked = False
    if (case / "carried_upstream_response.json").exists():
        body = (case / "carried_upstream_response.json").read_bytes()
        completion = anthropic.decode_response(body, request, model)
        expected = orjson.loads((case / "carried_client_response.json").read_bytes())
        normalise = Normaliser()
        actual = _uncarry(orjson.loads(completion.body))
        assert_same(normalise(actual), normalise(expected), "client response")
        checked = True
    if (case / "carried_upstream_stream.sse").exists():
        decoder = anthropic.stream_decoder(request, model)
        framer = sse.Framer()
        raw = (case / "carried_upstream_stream.sse").read_bytes()
        out = b""
        for start in range(0, len(raw), 29):  # arbitrary network chunking
            for event in framer.feed(raw[start : start + 29]):
                out += fed(decoder, event)
        out += fed(decoder, None)
        assert decoder.state.error is None
        expected_items = sse_items((case / "carried_client_stream.sse").read_bytes())
        normalise = Normaliser()
        assert_same(normalise(_uncarry(sse_items(out))), normalise(expected_items), "stream")
        want = orjson.loads((case / "carried_stream_state.json").read_bytes())
        assert decoder.state.finished is want["finished"]
        assert_same(decoder.state.usage, want["usage"], "state.usage")
        checked = True
    assert checked


# ---------------------------------------------------------------- round trip


def test_a_tool_loop_gets_its_thinking_back_unmodified() -> None:
    """What a whole answer carries comes back, for the same model, exactly as received."""
    model = MODELS["claude-opus-5-5"]
    case = GOLDEN / "anthropic" / "reasoning_tool_use"
    first = parse_chat((case / "client_request.json").read_bytes())
    upstream = orjson.loads((case / "carried_upstream_response.json").read_bytes())
    answer = orjson.loads(anthropic.decode_response(orjson.dumps(upstream), first, model).body)
    message = answer["choices"][0]["message"]
    message.pop("refusal")
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": "ok"}
        for call in message["tool_calls"]
    ]
    body = orjson.loads((case / "client_request.json").read_bytes())
    body["messages"] += [message, *results]
    sent = _encode(body, model)
    assert sent["messages"][1] == {"role": "assistant", "content": upstream["content"]}
    assert [b["tool_use_id"] for b in sent["messages"][2]["content"]] == ["toolu_01A", "toolu_01B"]


def test_forged_state_brings_back_only_thinking_blocks() -> None:
    model = MODELS["claude-sonnet-5-5"]
    state = {"a": [{"type": "text", "text": "injected"}, {"type": "thinking", "thinking": ""}]}
    call_id = carry.wrap("toolu_1", model.upstream_id, state)
    call = {"id": call_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call_id, "content": "done"},
    ]
    sent = _encode({"model": "auto", "messages": messages}, model)
    assert sent["messages"][1]["content"] == [
        {"type": "thinking", "thinking": ""},
        {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
    ]


def test_only_a_model_with_a_reasoning_spec_gets_an_effort() -> None:
    body = _ask(reasoning_effort="high", tools=[WEATHER], tool_choice="required")
    sent = _encode(body, MODELS["claude-sonnet-5-5"])
    assert sent["output_config"] == {"effort": "high"}
    assert sent["tool_choice"] == {"type": "auto"}
    sent = _encode(body, MODELS["claude-3-haiku"])  # as before: the effort is dropped
    assert "thinking" not in sent
    assert "output_config" not in sent
    assert sent["tool_choice"] == {"type": "any"}


# ---------------------------------------------------------------- budget control


def test_budget_effort_sends_manual_thinking_with_room_for_it() -> None:
    """§7.4: low → 2,048 tokens; max_tokens raised to the budget + 1,024; temperature may
    not be set and tool_choice must be auto with thinking on (§7.2)."""
    sent = _encode(
        _ask(
            reasoning_effort="low",
            max_tokens=500,
            temperature=0.3,
            tools=[WEATHER],
            tool_choice="required",
        ),
        _budget_model(),
    )
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    assert sent["max_tokens"] == 3072
    assert "temperature" not in sent
    assert sent["tool_choice"] == {"type": "auto"}
    assert "output_config" not in sent
    for effort in (None, "none"):  # no thinking: the request as for any model
        fields = {"reasoning_effort": effort} if effort else {}
        body = _ask(temperature=0.3, tools=[WEATHER], tool_choice="required", **fields)
        sent = _encode(body, _budget_model())
        assert "thinking" not in sent
        assert sent["temperature"] == 0.3
        assert sent["tool_choice"] == {"type": "any"}


def test_budget_max_fits_within_max_output() -> None:
    """§7.4: max → min(64000, max_tokens - 1024) with max_tokens at the model's 64,000."""
    sent = _encode(_ask(reasoning_effort="max"), _budget_model())
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 62976}
    assert sent["max_tokens"] == 64000


def test_budget_keeps_a_large_max_tokens_and_top_p_within_range() -> None:
    sent = _encode(_ask(reasoning_effort="medium", max_tokens=20000, top_p=0.97), _budget_model())
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 8192}
    assert sent["max_tokens"] == 20000
    assert sent["top_p"] == 0.97
    sent = _encode(_ask(reasoning_effort="medium", top_p=0.5), _budget_model())
    assert "top_p" not in sent


def test_budget_model_json_schema_is_native() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    sent = _encode(_ask(reasoning_effort="high", response_format=fmt), _budget_model())
    assert sent["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }
    assert "tools" not in sent
    assert "tool_choice" not in sent


def test_shown_thinking_is_carried_whole_from_a_stream() -> None:
    """A manual-thinking model shows its thinking (display summarized): the deltas are joined
    into the block the tool call carries, with its signature."""
    model = _budget_model()
    request = parse_chat(orjson.dumps(_ask(stream=True, tools=[WEATHER])))
    decoder = anthropic.stream_decoder(request, model)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": model.upstream_id}},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "I need "},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "the weather."},
        },
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig-1"},
        },
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "opaque"},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {"type": "tool_use", "id": "toolu_9", "name": "get_weather"},
        },
    ]
    out = b"".join(
        fed(decoder, b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n")
        for e in events
    )
    (call,) = next(c for c in sse_items(out) if "tool_calls" in c["choices"][0]["delta"])[
        "choices"
    ][0]["delta"]["tool_calls"]
    plain, state = carry.unwrap(call["id"])
    assert plain == "toolu_9"
    assert state == {
        "m": "claude-haiku-4-5-20251001",
        "a": [
            {"type": "thinking", "thinking": "I need the weather.", "signature": "sig-1"},
            {"type": "redacted_thinking", "data": "opaque"},
        ],
    }
