from __future__ import annotations

import orjson
import pytest

from gearshift.errors import BadRequest
from gearshift.inbound.chat import Limits, parse_chat

OK = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def _body(**changes: object) -> bytes:
    body = dict(OK)
    for key, value in changes.items():
        if value is ...:
            body.pop(key, None)
        else:
            body[key] = value
    return orjson.dumps(body)


def test_valid_request_keeps_unknown_fields_and_takes_out_hints() -> None:
    chat = parse_chat(
        _body(seed=7, logit_bias={"1": 2}, vendor_field={"a": [1]}, gearshift={"tier": "light"})
    )
    assert chat.model == "gpt-4o"
    assert chat.body["vendor_field"] == {"a": [1]}
    assert chat.body["logit_bias"] == {"1": 2}
    assert "gearshift" not in chat.body
    assert chat.hints == {"tier": "light"}
    assert not chat.stream


def test_stream_and_usage_flags() -> None:
    chat = parse_chat(_body(stream=True, stream_options={"include_usage": True}))
    assert chat.stream
    assert chat.client_wants_usage
    chat = parse_chat(_body(stream=True))
    assert chat.stream
    assert not chat.client_wants_usage


@pytest.mark.parametrize(
    ("raw", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (_body(model=...), "model", "missing_required_parameter"),
        (_body(model=3), "model", "invalid_type"),
        (_body(model=""), "model", "invalid_type"),
        (_body(messages=...), "messages", "missing_required_parameter"),
        (_body(messages="hi"), "messages", "invalid_type"),
        (_body(messages=[]), "messages", "empty_array"),
        (_body(messages=["hi"]), "messages[0]", "invalid_type"),
        (_body(messages=[{"content": "hi"}]), "messages[0].role", "invalid_value"),
        (
            _body(messages=[{"role": "wizard", "content": "hi"}]),
            "messages[0].role",
            "invalid_value",
        ),
        (_body(messages=[{"role": "user", "content": 5}]), "messages[0].content", "invalid_type"),
        (_body(messages=[{"role": "user"}]), "messages[0].content", "missing_required_parameter"),
        (_body(stream="yes"), "stream", "invalid_type"),
        (_body(max_tokens="100"), "max_tokens", "invalid_type"),
        (_body(max_tokens=True), "max_tokens", "invalid_type"),
        (_body(temperature="hot"), "temperature", "invalid_type"),
        (_body(n=1.5), "n", "invalid_type"),
        (_body(tools={"type": "function"}), "tools", "invalid_type"),
        (_body(stream_options={"include_usage": True}), "stream_options", "invalid_value"),
        (_body(gearshift="light"), "gearshift", "invalid_type"),
    ],
)
def test_bad_requests_name_the_field(raw: bytes, param: str | None, code: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_chat(raw)
    assert info.value.status == 400
    assert info.value.param == param
    assert info.value.code == code
    body = orjson.loads(info.value.body())
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"


def test_assistant_with_tool_calls_may_have_null_content() -> None:
    parse_chat(
        _body(
            messages=[
                {"role": "user", "content": "weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "w", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ]
        )
    )


# ---------------------------------------------------------------- what one request may hold


def _refused_by(body: object, limits: Limits) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_chat(orjson.dumps(body), limits)
    return info.value


def test_messages_parts_and_nesting_are_bounded_by_the_limits() -> None:
    limits = Limits(max_messages=3, max_content_parts=4, max_nesting=8)
    msg = {"role": "user", "content": "x"}
    parse_chat(orjson.dumps({"model": "auto", "messages": [msg] * 3}), limits)
    assert _refused_by({"model": "auto", "messages": [msg] * 4}, limits).code == (
        "too_many_messages"
    )
    # Refused before parsing when the body holds far more "role" keys than allowed.
    early = _refused_by({"model": "auto", "messages": [msg] * 7}, limits)
    assert early.code == "too_many_messages"
    assert '"role" keys' in early.message
    parts = {"role": "user", "content": [{"type": "text", "text": "x"}] * 5}
    assert _refused_by({"model": "auto", "messages": [parts]}, limits).code == (
        "too_many_content_parts"
    )
    deep: object = "x"
    for _ in range(8):
        deep = [deep]
    error = _refused_by({"model": "auto", "messages": [msg], "metadata": deep}, limits)
    assert error.code == "nesting_too_deep"
    assert error.status == 400


def test_role_and_type_inside_strings_do_not_count() -> None:
    limits = Limits(max_messages=1, max_content_parts=1)
    text = '{"role": "user", "type": "text"} ' * 50  # escaped quotes in JSON
    parse_chat(
        orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": text}]}), limits
    )
