"""The Responses API inbound (``inbound.responses``): what the golden cases do not show, and
the official ``openai`` SDK reading what the encoders write (its client over an in-process
transport: the SDK's own SSE decoding, stream accumulator and response models)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from gearshift.errors import BadRequest, RateLimited
from gearshift.inbound import responses
from gearshift.inbound.chat import Limits
from gearshift.providers import carry

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def _raw(**fields: Any) -> bytes:
    return orjson.dumps({"model": "auto", "input": "hi", **fields})


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    return b"data: " + orjson.dumps({**body, "choices": [choice]}) + b"\n\n"


def usage_chunk(prompt: int = 5, completion: int = 7) -> bytes:
    use = {"prompt_tokens": prompt, "completion_tokens": completion}
    body = {"id": "c1", "object": "chat.completion.chunk", "choices": [], "usage": use}
    return b"data: " + orjson.dumps(body) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def call_delta(index: int, arguments: str, call_id: str | None = None) -> bytes:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id is not None:
        fragment |= {"id": call_id, "type": "function"}
        fragment["function"]["name"] = "get_weather"
    return chunk({"tool_calls": [fragment]})


PARALLEL = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Let me "}),
    chunk({"content": "check."}),
    call_delta(0, "", "call_paris"),
    call_delta(0, '{"ci'),
    call_delta(0, 'ty": "Paris"}'),
    call_delta(1, '{"city"', "call_rome"),
    call_delta(1, ': "Rome"}'),
    chunk({}, "tool_calls"),
    usage_chunk(),
    DONE,
]


def _stream(pieces: list[bytes], **fields: Any) -> tuple[bytes, responses.StreamEncoder]:
    request = responses.parse(_raw(stream=True, **fields))
    encoder = responses.StreamEncoder(request, "resp_1", "gpt-6-mini")
    out = b"".join(encoder.feed(p) for p in pieces) + encoder.end()
    return out, encoder


def _client(answer: Callable[[dict[str, Any]], tuple[int, bytes, str]]) -> openai.OpenAI:
    """The SDK, its requests answered in process by ``answer(body)``."""

    def handle(request: httpx2.Request) -> httpx2.Response:
        status, content, kind = answer(orjson.loads(request.content))
        return httpx2.Response(status, content=content, headers={"content-type": kind})

    return openai.OpenAI(
        api_key="gs-key",
        base_url="http://gearshift.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handle)),
        max_retries=0,
        _strict_response_validation=True,
    )


def _streaming(pieces: list[bytes]) -> Callable[[dict[str, Any]], tuple[int, bytes, str]]:
    def answer(body: dict[str, Any]) -> tuple[int, bytes, str]:
        request = responses.parse(orjson.dumps(body))
        encoder = responses.StreamEncoder(request, "resp_sdk", "gpt-6-mini")
        out = b"".join(encoder.feed(p) for p in pieces) + encoder.end()
        return 200, out, "text/event-stream"

    return answer


# ---------------------------------------------------------------- the SDK reads it


def test_sdk_stream_accumulates_text_and_parallel_calls() -> None:
    client = _client(_streaming(PARALLEL))
    with client.responses.stream(model="auto", input="weather?", tools=[WEATHER]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert final.id == "resp_sdk"
    assert final.output_text == "Let me check."
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_paris", "get_weather", '{"city": "Paris"}'),
        ("call_rome", "get_weather", '{"city": "Rome"}'),
    ]
    assert final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 7)


def test_sdk_create_stream_yields_typed_events_and_a_failure() -> None:
    pieces = [chunk({"content": "Par"}), b'data: {"error": {"message": "boom", "type": "x"}}\n\n']
    client = _client(_streaming(pieces))
    events = list(client.responses.create(model="auto", input="hi", stream=True))
    assert [type(e).__name__ for e in events][-1] == "ResponseFailedEvent"
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("server_error", "boom")
    with (
        pytest.raises(RuntimeError, match=r"response\.completed"),
        client.responses.stream(model="auto", input="hi") as stream,
    ):
        stream.get_final_response()


def test_sdk_reads_a_whole_response_strictly() -> None:
    completion = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "On it.",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        }
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }

    def answer(body: dict[str, Any]) -> tuple[int, bytes, str]:
        request = responses.parse(orjson.dumps(body))
        doc = responses.encode(orjson.dumps(completion), request, "resp_w", "gpt-6-mini")
        return 200, orjson.dumps(doc), "application/json"

    client = _client(answer)
    response = client.responses.create(
        model="auto",
        input="weather in Oslo?",
        tools=[WEATHER],  # type: ignore[list-item]
        metadata={"k": "v"},
        temperature=0.5,
    )
    assert response.output_text == "On it."
    assert response.model == "gpt-6-mini"
    assert response.metadata == {"k": "v"}
    assert response.temperature == 0.5
    call = response.output[1]
    assert call.type == "function_call"
    assert (call.call_id, call.arguments) == ("call_1", '{"city":"Oslo"}')


def test_sdk_raises_the_error_body_with_its_code_and_param() -> None:
    def answer(body: dict[str, Any]) -> tuple[int, bytes, str]:
        try:
            responses.parse(orjson.dumps(body))
        except BadRequest as exc:
            return exc.status, responses.error_body(exc), "application/json"
        raise AssertionError("the request should be refused")

    client = _client(answer)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="auto", input="hi", tools=[{"type": "web_search"}])
    assert caught.value.code == "unsupported_tool"
    assert caught.value.param == "tools[0].type"
    assert "web_search" in caught.value.message


# ---------------------------------------------------------------- the request


def test_previous_id() -> None:
    assert responses.previous_id(_raw()) is None
    assert responses.previous_id(_raw(previous_response_id=None)) is None
    assert responses.previous_id(_raw(previous_response_id="resp_a")) == "resp_a"
    assert responses.previous_id(b'{"previous_response_id": ') is None  # parse refuses it
    with pytest.raises(BadRequest) as caught:
        responses.previous_id(_raw(previous_response_id=3))
    assert caught.value.param == "previous_response_id"


def test_usage_is_always_asked_and_hints_taken_out() -> None:
    whole = responses.parse(_raw(gearshift={"tier": "heavy"}))
    assert whole.chat.client_wants_usage
    assert not whole.chat.stream
    assert "stream_options" not in whole.chat.body
    assert whole.chat.hints == {"tier": "heavy"}
    assert "gearshift" not in whole.chat.body
    streamed = responses.parse(_raw(stream=True))
    assert streamed.chat.body["stream_options"] == {"include_usage": True}
    assert streamed.chat.client_wants_usage


def test_user_and_store_fields() -> None:
    request = responses.parse(_raw(user="legacy", store=False, metadata={"a": "b"}))
    assert request.chat.body["user"] == "legacy"
    assert (request.store, request.metadata) == (False, {"a": "b"})
    assert "metadata" not in request.chat.body
    assert "store" not in request.chat.body
    both = responses.parse(_raw(user="legacy", safety_identifier="sid"))
    assert both.chat.body["user"] == "sid"


def test_a_carried_call_id_comes_back_verbatim_and_is_noted() -> None:
    call_id = carry.wrap("call_1", "gpt-6", {"o": [{"id": "rs_1", "encrypted_content": "x"}]})
    items = [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": call_id, "output": "ok"},
    ]
    request = responses.parse(_raw(input=items, tools=[WEATHER]))
    assert request.chat.carried
    assert request.chat.body["messages"][1]["tool_calls"][0]["id"] == call_id
    assert request.chat.body["messages"][2]["tool_call_id"] == call_id


def test_history_is_not_changed() -> None:
    history = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
    ]
    items = [{"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}]
    request = responses.parse(_raw(input=items), history=history)
    assert history == [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert request.chat.body["messages"][-1]["tool_calls"][0]["id"] == "c"


def test_limits_apply_in_responses_terms() -> None:
    limits = Limits(max_messages=3, max_content_parts=4, max_nesting=16)
    many = [{"role": "user", "content": str(i)} for i in range(4)]
    with pytest.raises(BadRequest) as caught:
        responses.parse(_raw(input=many), limits)
    assert caught.value.param == "input"
    assert caught.value.code == "too_many_messages"
    huge = [{"role": "user", "content": "x"}] * 100
    with pytest.raises(BadRequest) as caught:
        responses.parse(_raw(input=huge), limits)
    assert caught.value.param == "input"
    deep: Any = "x"
    for _ in range(40):
        deep = {"a": deep}
    with pytest.raises(BadRequest) as caught:
        responses.parse(_raw(metadata=None, tools=[{**WEATHER, "parameters": deep}]), limits)
    assert caught.value.code == "nesting_too_deep"


# Words the decoder branches on, so random documents reach its branches.
WORDS = st.sampled_from(
    ["type", "role", "content", "text", "image_url", "detail", "file_id", "file_data",
     "input_text", "input_image", "input_file", "output_text", "refusal", "function",
     "name", "schema", "format", "json_schema", "json_object", "effort", "verbosity",
     "mode", "tools", "allowed_tools", "auto", "required", "low", "user", "assistant"]
)  # fmt: skip
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | WORDS
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(WORDS | st.text(max_size=4), inner),
    max_leaves=12,
)
KEYS = st.sampled_from(
    ["input", "tools", "tool_choice", "text", "reasoning", "instructions", "metadata",
     "max_output_tokens", "temperature", "stream", "store", "previous_response_id", "user"]
)  # fmt: skip
ITEM = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["message", "function_call", "function_call_output", "x"]),
        "role": st.sampled_from(["user", "assistant", "system", "tool"]) | JSON,
        "content": JSON,
        "call_id": st.sampled_from(["c1", "c2"]) | JSON,
        "name": JSON,
        "arguments": JSON,
        "output": JSON,
    },
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(KEYS, JSON), st.lists(ITEM, max_size=4))
def test_any_json_is_parsed_or_refused_cleanly(fields: dict[str, Any], items: list[Any]) -> None:
    body = {"model": "auto", **fields}
    if items:
        body["input"] = items
    try:
        request = responses.parse(orjson.dumps(body))
    except BadRequest as exc:
        error: BadRequest | None = exc
    else:
        error = None
        assert request.chat.body["messages"]
    assert error is None or (error.status == 400 and error.message)


# ---------------------------------------------------------------- the answers


def test_stream_output_does_not_depend_on_how_the_pieces_are_cut() -> None:
    def normal(out: bytes) -> bytes:  # minted ids and times differ between encoders
        out = re.sub(rb"(msg_|fc_)[0-9a-f]{48}", rb"\1x", out)
        return re.sub(rb'"(created_at|completed_at)":\d+', rb'"\1":0', out)

    raw = b"".join(PARALLEL)
    whole, _ = _stream([raw])
    assert normal(_stream(PARALLEL)[0]) == normal(whole)
    assert normal(_stream([raw[i : i + 5] for i in range(0, len(raw), 5)])[0]) == normal(whole)


def test_a_late_fragment_for_a_closed_call_lands_in_the_final_response() -> None:
    pieces = [
        call_delta(0, '{"a":', "call_a"),
        call_delta(1, "{}", "call_b"),
        call_delta(0, "1}"),
        chunk({}, "tool_calls"),
        DONE,
    ]
    _, encoder = _stream(pieces)
    assert encoder.final is not None
    assert [i["arguments"] for i in encoder.final["output"]] == ['{"a":1}', "{}"]


def test_an_empty_answer_still_has_its_message() -> None:
    out, encoder = _stream([chunk({"role": "assistant", "content": ""}), chunk({}, "stop"), DONE])
    assert encoder.final is not None
    Response.model_validate(encoder.final)
    assert encoder.final["output"][0]["content"] == [
        {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
    ]
    assert b"response.output_text.delta" not in out
    request = responses.parse(_raw())
    doc = responses.encode(b'{"choices": []}', request, "resp_1", "m")
    assert doc["output"][0]["content"][0]["text"] == ""
    assert doc["usage"] is None
    Response.model_validate(doc)


def test_keep_alives_and_malformed_events() -> None:
    out, encoder = _stream([b": keep-alive\n\n", chunk({"content": "a"}), b": ping\n\n"])
    assert not out.startswith(b":"), "nothing before response.created"
    assert b"\n\n: keep-alive\n\n" in out
    assert encoder.final is None
    assert out.rstrip().split(b"\n")[-2] == b"event: response.failed"
    out, _ = _stream([chunk({"content": "a"}), b"data: {not json\n\n", DONE])
    assert b"response.failed" in out
    assert b"response.completed" not in out


def test_failure_codes() -> None:
    error = RateLimited("slow down", provider="openai", code="rate_limit_exceeded")
    out, _ = _stream([chunk({"content": "a"}), b"data: " + error.body() + b"\n\n"])
    failed = orjson.loads(out.rstrip().split(b"\n")[-1][6:])["response"]
    assert failed["error"] == {"code": "rate_limit_exceeded", "message": "slow down"}
    Response.model_validate(failed)
    quota = b'data: {"error": {"message": "m", "type": "x", "code": "insufficient_quota"}}\n\n'
    out, _ = _stream([quota])
    assert b'"code":"insufficient_quota"' in out
    assert out.startswith(b"event: response.created\n"), "a failure first still opens"


def test_annotations_are_flattened() -> None:
    cite = {"url": "https://e.com", "title": "E", "start_index": 0, "end_index": 3}
    message = {"role": "assistant", "content": "abc", "annotations": [
        {"type": "url_citation", "url_citation": cite}
    ]}  # fmt: skip
    completion = {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}
    doc = responses.encode(orjson.dumps(completion), responses.parse(_raw()), "resp_1", "m")
    assert doc["output"][0]["content"][0]["annotations"] == [{"type": "url_citation", **cite}]
    Response.model_validate(doc)


def test_assistant_message() -> None:
    _, encoder = _stream(PARALLEL)
    assert encoder.final is not None
    assert responses.assistant_message(encoder.final) == {
        "role": "assistant",
        "content": "Let me check.",
        "tool_calls": [
            {
                "id": "call_paris",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            },
            {
                "id": "call_rome",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
            },
        ],
    }
    refusal = {"output": [{"type": "message", "content": [{"type": "refusal", "refusal": "no"}]}]}
    assert responses.assistant_message(refusal) == {
        "role": "assistant",
        "content": None,
        "refusal": "no",
    }
    assert responses.assistant_message({"output": []}) == {"role": "assistant", "content": ""}


def test_a_stored_answer_continues_the_conversation() -> None:
    """What the app does with ``previous_response_id``: the chat messages so far and the
    answer's assistant message as the next request's history."""
    first = responses.parse(_raw(input="weather in Paris?", tools=[WEATHER]))
    _, encoder = _stream(PARALLEL, tools=[WEATHER])
    assert encoder.final is not None
    history = [*first.chat.body["messages"], responses.assistant_message(encoder.final)]
    outputs = [
        {"type": "function_call_output", "call_id": "call_paris", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_rome", "output": "rain"},
    ]
    second = responses.parse(_raw(input=outputs, tools=[WEATHER]), history=history)
    roles = [m["role"] for m in second.chat.body["messages"]]
    assert roles == ["user", "assistant", "tool", "tool"]
    assert [i["id"][:4] for i in second.input_items] == ["fco_", "fco_"]


def test_error_body_is_openai_shaped() -> None:
    error = BadRequest("bad", param="input[0]", code="invalid_value")
    assert orjson.loads(responses.error_body(error)) == {
        "error": {
            "message": "bad",
            "type": "invalid_request_error",
            "param": "input[0]",
            "code": "invalid_value",
        }
    }
