"""Property tests for the translating adapters (Anthropic, Gemini).

Requests: any well-formed OpenAI chat request either encodes to a body the provider accepts
*structurally* (the validation rules in docs/wire-formats.md §2.2, §3.2, §4.7) or is refused
with ``BadRequest`` or ``Unsupported``; nothing else may escape. Streams and answers: decoders
never crash on arbitrary JSON-ish input; they note a ``state.error`` (or raise an
``UpstreamError`` for a whole body) instead.

Runs are bounded and derandomized, so CI sees the same examples every time.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import fed
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gearshift import sse
from gearshift.config import catalog_2024, load
from gearshift.errors import BadRequest, Unsupported, UpstreamError
from gearshift.inbound.chat import parse_chat
from gearshift.providers import REGISTRY, anthropic, gemini

CONFIG = load(
    None,
    environ={
        "OPENAI_API_KEY": "sk-test-openai-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
        "GEMINI_API_KEY": "gemini-test-key-0123456789",
    },
    base=catalog_2024(),
)
CLAUDE = CONFIG.models["claude-3-haiku"]
GEMINI = CONFIG.models["gemini-1.5-flash"]
GPT = CONFIG.models["gpt-4o-mini"]

BOUNDED = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ---------------------------------------------------------------- request strategies

TOOL_NAMES = ["get_weather", "get_time", "search", "noop"]
PNG = (  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4"
    "2mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

texts = st.one_of(
    st.just(""),
    st.sampled_from([" ", "\n", "  \t"]),
    st.text(alphabet="abc xyz{}\"':.\n", min_size=1, max_size=12),
)
text_parts = st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), max_size=3)
images = st.one_of(
    st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"]).map(
        lambda mime: {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{PNG}"}}
    ),
    st.sampled_from(["https://example.com/a.png", "https://example.com/b?x=1"]).map(
        lambda url: {"type": "image_url", "image_url": {"url": url, "detail": "auto"}}
    ),
)
user_content = st.one_of(
    texts, st.lists(st.one_of(texts.map(lambda t: {"type": "text", "text": t}), images), max_size=4)
)
plain_content = st.one_of(texts, text_parts)
assistant_content = st.one_of(st.none(), texts, text_parts)
tool_content = st.one_of(
    texts, text_parts, st.sampled_from(['{"ok": true}', "[1, 2]", '{"nested": {"a": 1}}', "{bad"])
)
arguments = st.sampled_from(
    ['{"city": "Paris"}', "{}", "", "not json", "[1, 2]", '{"a": [1, {"b": 2}]}']
)


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Messages of every role, tool calls answered in any order, some not, stray results."""
    messages: list[dict[str, Any]] = []
    ids: list[str] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(
            st.sampled_from(
                ["system", "developer", "user", "user", "assistant", "tools", "tools", "stray"]
            )
        )
        if kind in ("system", "developer"):
            messages.append({"role": kind, "content": draw(plain_content)})
        elif kind == "user":
            messages.append({"role": "user", "content": draw(user_content)})
        elif kind == "assistant":
            messages.append({"role": "assistant", "content": draw(assistant_content)})
        elif kind == "stray":  # a result whose call is unknown or long past
            stray = draw(st.sampled_from([*ids, "call_unknown"]))
            messages.append({"role": "tool", "tool_call_id": stray, "content": draw(tool_content)})
        else:
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                reuse = ids and draw(st.integers(0, 9)) == 0  # ids are sometimes reused
                call_id = draw(st.sampled_from(ids)) if reuse else f"call_{len(ids)}"
                ids.append(call_id)
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {
                            "name": draw(st.sampled_from(TOOL_NAMES)),
                            "arguments": draw(arguments),
                        },
                    }
                )
            content = draw(assistant_content)
            messages.append({"role": "assistant", "content": content, "tool_calls": calls})
            answered = draw(st.permutations(calls))[: draw(st.integers(0, len(calls)))]
            for call in answered:
                messages.append(
                    {"role": "tool", "tool_call_id": call["id"], "content": draw(tool_content)}
                )
    return messages


schemas = st.sampled_from(
    [
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "default": {"type": "string", "default": "x"},
                "items": {
                    "type": "array",
                    "items": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "required": ["default"],
        },
        {"type": "object", "properties": {}},
        {},
    ]
)
tools = st.lists(
    st.builds(
        lambda name, params, desc: {
            "type": "function",
            "function": {"name": name, **params, **desc},
        },
        st.sampled_from(TOOL_NAMES),
        st.one_of(st.just({}), schemas.map(lambda s: {"parameters": s})),
        st.one_of(st.just({}), st.just({"description": "A tool."})),
    ),
    max_size=3,
    unique_by=lambda t: t["function"]["name"],
)
tool_choices = st.one_of(
    st.sampled_from(["auto", "none", "required"]),
    st.sampled_from(TOOL_NAMES).map(lambda n: {"type": "function", "function": {"name": n}}),
)
response_formats = st.one_of(
    st.just({"type": "text"}),
    st.just({"type": "json_object"}),
    schemas.map(lambda s: {"type": "json_schema", "json_schema": {"name": "out", "schema": s}}),
    st.just({"type": "json_schema", "json_schema": {"name": "bare"}}),
)
stops = st.one_of(texts, st.lists(st.text(alphabet="ab \n", min_size=1, max_size=3), max_size=8))
OPTIONAL = {
    "tools": tools,
    "tool_choice": tool_choices,
    "parallel_tool_calls": st.booleans(),
    "stop": stops,
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0, 1),
    "max_tokens": st.integers(1, 100_000),
    "max_completion_tokens": st.integers(1, 100_000),
    "response_format": response_formats,
    "n": st.integers(1, 3),
    "seed": st.integers(0, 2**31),
    "user": st.text(max_size=5),
}


@st.composite
def chat_requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "auto", "messages": draw(conversations())}
    for name in draw(st.sets(st.sampled_from(sorted(OPTIONAL)))):
        body[name] = draw(OPTIONAL[name])
    if draw(st.booleans()):
        body["stream"] = True
        if draw(st.booleans()):
            body["stream_options"] = {"include_usage": draw(st.booleans())}
    return body


def encode(adapter: Any, model: Any, body: dict[str, Any]) -> dict[str, Any] | None:
    """The upstream body, or None when the adapter refused the request with a 400."""
    request = parse_chat(orjson.dumps(body))
    try:
        out = adapter.encode_request(request, model)
    except (BadRequest, Unsupported):
        return None  # a 400 (or "another model, please"), the only refusals allowed
    decoded = orjson.loads(out.body)
    assert isinstance(decoded, dict)
    return decoded


# ---------------------------------------------------------------- what the providers accept


def _nonblank(text: Any) -> bool:
    return isinstance(text, str) and text.strip() != ""


def assert_anthropic_accepts(body: dict[str, Any]) -> None:
    """Anthropic's structural rules (wire-formats.md §2.2 a to d, plus role order)."""
    assert isinstance(body["max_tokens"], int)
    assert body["max_tokens"] > 0
    assert 0 <= body.get("temperature", 0) <= 1
    if "system" in body:
        assert _nonblank(body["system"])
    messages = body["messages"]
    assert messages, "at least one message"
    assert messages[0]["role"] == "user", "the first message must use the user role"
    for m in messages:
        assert m["role"] in ("user", "assistant"), "no system role inside messages"
        assert m["content"], "non-empty content"
        for block in m["content"]:
            if block["type"] == "text":
                assert _nonblank(block["text"]), "text blocks must contain non-whitespace text"
    for a, b in itertools.pairwise(messages):
        assert a["role"] != b["role"], "roles alternate"
    last = messages[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        assert last["content"][-1]["text"] == last["content"][-1]["text"].rstrip()
    previous_uses: list[str] = []
    for i, m in enumerate(messages):
        blocks = m["content"]
        if m["role"] == "assistant":
            assert not any(b["type"] == "tool_result" for b in blocks)
            uses = [b["id"] for b in blocks if b["type"] == "tool_use"]
            assert len(uses) == len(set(uses)), "tool_use ids are unique"
            for b in blocks:
                if b["type"] == "tool_use":
                    assert isinstance(b["input"], dict)
                    assert b["name"]
            if uses:
                assert i + 1 < len(messages), "a tool_use needs its tool_result"
            previous_uses = uses
            continue
        kinds = [b["type"] for b in blocks]
        n = kinds.count("tool_result")
        assert kinds[:n] == ["tool_result"] * n, "tool_result blocks come first"
        results = [b["tool_use_id"] for b in blocks[:n]]
        assert sorted(results) == sorted(previous_uses), (
            "every tool_use answered in the very next user message, and no stray tool_result"
        )
        for b in blocks[:n]:
            assert "content" not in b or _nonblank(b["content"])
        previous_uses = []
    if "tool_choice" in body:
        assert body.get("tools"), "tool_choice without tools"
    names = [t["name"] for t in body.get("tools", ())]
    assert len(names) == len(set(names))
    for t in body.get("tools", ()):
        assert t["input_schema"].get("type", "object") == "object"


def _schema_keywords(schema: Any) -> Iterator[str]:
    """Every keyword used in a schema, at any depth (property names are not keywords)."""
    if isinstance(schema, dict):
        for key, value in schema.items():
            yield key
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():
                    yield from _schema_keywords(sub)
            elif key not in ("required", "enum"):
                yield from _schema_keywords(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _schema_keywords(value)


def _schemas(schema: Any) -> Iterator[dict[str, Any]]:
    """Every (sub)schema object of a schema."""
    if isinstance(schema, dict):
        yield schema
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():
                    yield from _schemas(sub)
            elif key not in ("required", "enum"):
                yield from _schemas(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _schemas(value)


def assert_gemini_accepts(body: dict[str, Any]) -> None:
    """Gemini's structural rules (wire-formats.md §3.2 and §4.7)."""
    contents = body["contents"]
    assert contents, "contents must not be empty"
    assert contents[0]["role"] == "user", "the conversation opens with the user"
    for a, b in itertools.pairwise(contents):
        assert a["role"] != b["role"], "user and model turns alternate"
    for i, turn in enumerate(contents):
        assert turn["role"] in ("user", "model")
        assert turn["parts"], "no content with empty parts"
        for part in turn["parts"]:
            assert len(part) == 1, part
            if "text" in part:
                assert _nonblank(part["text"]), "no empty text part"
            if "functionResponse" in part:
                assert isinstance(part["functionResponse"]["response"], dict)
        calls = [p["functionCall"]["name"] for p in turn["parts"] if "functionCall" in p]
        answers = [p["functionResponse"]["name"] for p in turn["parts"] if "functionResponse" in p]
        if turn["role"] == "model":
            assert not answers
            following = contents[i + 1]["parts"] if i + 1 < len(contents) else []
            responded = [
                p["functionResponse"]["name"] for p in following if "functionResponse" in p
            ]
            assert responded == calls, "functionResponse parts match the functionCall parts"
        else:
            assert not calls
            before = contents[i - 1]["parts"] if i else []
            called = [p["functionCall"]["name"] for p in before if "functionCall" in p]
            assert answers == called, "no functionResponse without its functionCall"
    system = body.get("systemInstruction")
    if system is not None:
        assert system["parts"]
        assert all(_nonblank(p["text"]) for p in system["parts"])
    generation = body.get("generationConfig", {})
    assert len(generation.get("stopSequences", ())) <= 5
    assert all(_nonblank(s) or s for s in generation.get("stopSequences", ()))
    schemas_used = [generation.get("responseSchema")]
    for group in body.get("tools", ()):
        for declaration in group["functionDeclarations"]:
            schemas_used.append(declaration.get("parameters"))
            if "parameters" in declaration:
                assert declaration["parameters"].get("properties"), "no empty object schema"
    for schema in schemas_used:
        for sub in _schemas(schema):
            if isinstance(sub.get("required"), list) and "properties" in sub:
                assert set(sub["required"]) <= set(sub["properties"]), "required names a property"
        keywords = set(_schema_keywords(schema))
        assert not keywords & {"additionalProperties", "$schema", "$ref", "$defs", "default"}
    if "toolConfig" in body:
        assert body.get("tools"), "toolConfig without tools"


@BOUNDED
@given(chat_requests())
def test_anthropic_requests_are_accepted_or_refused_with_400(body: dict[str, Any]) -> None:
    out = encode(anthropic, CLAUDE, body)
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        assert out is None, "n > 1 is refused"
        return
    assert out is not None
    assert_anthropic_accepts(out)
    assert out["model"] == CLAUDE.upstream_id
    assert out.get("stream", False) is body.get("stream", False)


@BOUNDED
@given(chat_requests())
def test_gemini_requests_are_accepted_or_refused_with_400(body: dict[str, Any]) -> None:
    out = encode(gemini, GEMINI, body)
    if out is None:
        assert _web_image(body), "only a web image URL is refused (Gemini reads data URLs)"
        return
    assert_gemini_accepts(out)


def _web_image(body: dict[str, Any]) -> bool:
    return any(
        isinstance(part, dict)
        and part.get("type") == "image_url"
        and not str(part.get("image_url", {}).get("url", "")).startswith("data:")
        for m in body["messages"]
        if isinstance(m.get("content"), list)
        for part in m["content"]
    )


def test_a_malformed_tool_call_is_a_400_not_a_crash() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "a", "function": "x"}]},
            {"role": "tool", "tool_call_id": "a", "content": "r"},
        ],
    }
    for adapter, model in ((anthropic, CLAUDE), (gemini, GEMINI)):
        assert encode(adapter, model, body) is None


# ---------------------------------------------------------------- decoders never crash

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**9), 10**9),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=12,
)


odd = st.one_of(
    st.sampled_from([[], [1], {}, {"a": 1}, None, True, 0, -1, 1.5, "", "x"]), json_values
)
"""Values of the wrong type: unhashable, falsy, nested."""


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The realistic value, or (as often) anything JSON in its place."""
    return st.one_of(strategy, odd)


def _event(kind: str, **fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"type": st.just(kind), **fields})


small_text = st.text(alphabet='ab {}"', max_size=4)
indexes = st.integers(0, 3)
anthropic_usage = st.dictionaries(
    st.sampled_from(
        ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"]
    ),
    maybe(st.integers(0, 10**6)),
    max_size=4,
)
anthropic_events = st.one_of(
    _event(
        "message_start",
        message=maybe(
            st.fixed_dictionaries(
                {"id": maybe(st.just("msg_1")), "usage": maybe(anthropic_usage)},
                optional={"model": maybe(st.just("claude"))},
            )
        ),
    ),
    _event(
        "content_block_start",
        index=maybe(indexes),
        content_block=maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(["text", "tool_use", "thinking"]))},
                optional={
                    "id": maybe(st.just("toolu_1")),
                    "name": maybe(st.sampled_from(["f", "json_response"])),
                    "text": maybe(small_text),
                },
            )
        ),
    ),
    _event(
        "content_block_delta",
        index=maybe(indexes),
        delta=maybe(
            st.fixed_dictionaries(
                {"type": st.just("input_json_delta"), "partial_json": maybe(small_text)}
            )
        ),
    ),
    _event(
        "content_block_delta",
        index=maybe(indexes),
        delta=maybe(
            st.fixed_dictionaries(
                {"type": maybe(st.sampled_from(["text_delta", "thinking_delta"]))},
                optional={"text": maybe(small_text)},
            )
        ),
    ),
    _event("content_block_stop", index=maybe(indexes)),
    _event(
        "message_delta",
        delta=maybe(
            st.fixed_dictionaries(
                {"stop_reason": maybe(st.sampled_from(["end_turn", "tool_use", "refusal"]))}
            )
        ),
        usage=maybe(anthropic_usage),
    ),
    _event("message_stop"),
    _event("ping"),
    _event(
        "error",
        error=maybe(
            st.fixed_dictionaries(
                {
                    "type": maybe(st.sampled_from(["overloaded_error", "api_error"])),
                    "message": maybe(small_text),
                }
            )
        ),
    ),
    json_values,
)
gemini_parts = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"text": maybe(small_text)}, optional={"thought": maybe(st.booleans())}
        ),
        st.fixed_dictionaries(
            {
                "functionCall": maybe(
                    st.fixed_dictionaries(
                        {"name": maybe(st.sampled_from(["f", "g"]))},
                        optional={
                            "args": maybe(st.dictionaries(st.text(max_size=3), json_values)),
                            "id": maybe(st.just("c1")),
                        },
                    )
                )
            }
        ),
        odd,
    ),
    max_size=3,
)
gemini_candidates = st.fixed_dictionaries(
    {},
    optional={
        "content": maybe(st.fixed_dictionaries({"parts": maybe(gemini_parts)})),
        "finishReason": maybe(
            st.sampled_from(["STOP", "MAX_TOKENS", "SAFETY", "FINISH_REASON_UNSPECIFIED"])
        ),
        "index": maybe(st.integers(0, 2)),
    },
)
gemini_usage = st.dictionaries(
    st.sampled_from(
        ["promptTokenCount", "candidatesTokenCount", "thoughtsTokenCount", "totalTokenCount"]
    ),
    maybe(st.integers(0, 10**6)),
    max_size=4,
)
gemini_errors = st.fixed_dictionaries(
    {},
    optional={
        "code": maybe(st.sampled_from([400, 429, 503])),
        "status": maybe(st.sampled_from(["INVALID_ARGUMENT", "UNAVAILABLE"])),
        "message": maybe(small_text),
        "details": maybe(
            st.lists(
                maybe(
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "reason": maybe(st.just("API_KEY_INVALID")),
                            "retryDelay": maybe(st.sampled_from(["37s", "1.5s", "xs", "5"])),
                        },
                    )
                ),
                max_size=2,
            )
        ),
    },
)
gemini_events = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "candidates": maybe(st.lists(maybe(gemini_candidates), max_size=2)),
            "usageMetadata": maybe(gemini_usage),
            "promptFeedback": maybe(
                st.fixed_dictionaries({"blockReason": maybe(st.just("SAFETY"))})
            ),
            "modelVersion": maybe(st.just("gemini-x")),
            "responseId": maybe(st.just("r1")),
        },
    ),
    st.fixed_dictionaries({"error": maybe(gemini_errors)}),
    json_values,
)


def frame(doc: Any) -> bytes:
    """An SSE event, named after the object's ``type`` when it has one (as Anthropic does)."""
    name = doc.get("type") if isinstance(doc, dict) else None
    head = f"event: {name}\n".encode() if isinstance(name, str) and name.isidentifier() else b""
    return head + b"data: " + orjson.dumps(doc) + b"\n\n"


raw_extras = st.sampled_from(
    [b"data: {not json\n\n", b": comment\n\n", b"data: [DONE]\n\n", b"event: ping\n\n"]
)


def assert_openai_sse(out: bytes) -> None:
    framer = sse.Framer()
    for event in framer.feed(out):
        parsed = sse.parse(event)
        if parsed is None:
            continue
        if parsed.data != sse.DONE:
            assert isinstance(orjson.loads(parsed.data), dict)
    assert framer.pending == b""


def run_stream(kind: str, model: Any, events: list[bytes], stream_options: bool) -> None:
    """Feed every event (even past a noted error: nothing may crash) and end the body."""
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
    body["stream"] = True
    if stream_options:
        body["stream_options"] = {"include_usage": True}
    decoder = REGISTRY[kind].stream_decoder(parse_chat(orjson.dumps(body)), model)
    out = b""
    for event in events:
        out += fed(decoder, event)
    out += fed(decoder, None)
    state = decoder.state
    assert state.error is None or isinstance(state.error, UpstreamError)
    assert state.usage is None or isinstance(state.usage, dict)
    assert_openai_sse(out)


def streams(events: st.SearchStrategy[Any]) -> st.SearchStrategy[list[bytes]]:
    return st.lists(
        st.one_of(events.map(frame), events.map(frame), events.map(frame), raw_extras),
        min_size=1,
        max_size=12,
    )


ANTHROPIC_START = frame({"type": "message_start", "message": {"id": "msg_1", "usage": {}}})


# Shapes that once crashed a decoder (an unhashable index or finish reason): always tried.
CRASHED_ANTHROPIC = [
    frame({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use"}}),
    frame({"type": "content_block_delta", "index": [], "delta": {"type": "input_json_delta"}}),
    frame({"type": "content_block_delta", "index": {"a": 1}, "delta": {"partial_json": "{"}}),
]
CRASHED_GEMINI = [
    frame({"candidates": [{"finishReason": {"a": 1}}]}),
    frame({"candidates": [{"finishReason": [1], "content": {"parts": [{"text": "x"}]}}]}),
    frame({"error": {"code": 400, "details": [{"reason": []}, {"reason": {"a": 1}}]}}),
]


@BOUNDED
@given(streams(anthropic_events), st.booleans())
@example(CRASHED_ANTHROPIC, True)
def test_anthropic_stream_decoder_never_crashes(events: list[bytes], with_usage: bool) -> None:
    run_stream("anthropic", CLAUDE, [ANTHROPIC_START, *events], with_usage)
    run_stream("anthropic", CLAUDE, events, with_usage)


@BOUNDED
@given(streams(gemini_events), st.booleans())
@example(CRASHED_GEMINI, True)
def test_gemini_stream_decoder_never_crashes(events: list[bytes], with_usage: bool) -> None:
    run_stream("gemini", GEMINI, events, with_usage)


@pytest.mark.parametrize(("kind", "model"), [("anthropic", CLAUDE), ("gemini", GEMINI)])
def test_a_malformed_event_sets_state_error(kind: str, model: Any) -> None:
    request = parse_chat(b'{"model":"a","messages":[{"role":"user","content":"x"}],"stream":true}')
    decoder = REGISTRY[kind].stream_decoder(request, model)
    assert decoder.feed(b"data: {cut in the mid\n\n") == b""
    assert isinstance(decoder.state.error, UpstreamError)
    assert decoder.state.error.retryable
    assert not decoder.state.finished


anthropic_blocks = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": maybe(small_text)}),
    st.fixed_dictionaries(
        {
            "type": st.just("tool_use"),
            "id": maybe(st.just("toolu_1")),
            "name": maybe(st.sampled_from(["f", "json_response"])),
            "input": maybe(st.dictionaries(st.text(max_size=3), json_values, max_size=2)),
        }
    ),
    odd,
)
anthropic_messages = st.fixed_dictionaries(
    {"type": maybe(st.just("message")), "content": maybe(st.lists(anthropic_blocks, max_size=3))},
    optional={
        "id": maybe(st.just("msg_1")),
        "model": maybe(st.just("claude")),
        "stop_reason": maybe(st.sampled_from(["end_turn", "tool_use", "max_tokens"])),
        "usage": maybe(anthropic_usage),
        "error": maybe(st.fixed_dictionaries({"type": maybe(st.just("api_error"))})),
    },
)
JSON_SCHEMA_REQUEST = parse_chat(
    orjson.dumps(
        {
            "model": "a",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "o", "schema": {}}},
        }
    )
)


def decode_whole(kind: str, model: Any, doc: Any, status: int, json_schema: bool) -> None:
    body = orjson.dumps(doc)
    request = (
        JSON_SCHEMA_REQUEST
        if json_schema
        else parse_chat(b'{"model":"a","messages":[{"role":"user","content":"x"}]}')
    )
    adapter = REGISTRY[kind]
    try:
        completion = adapter.decode_response(body, request, model)
    except UpstreamError:
        pass
    else:
        assert isinstance(orjson.loads(completion.body), dict)
    error = adapter.decode_error(status, {"retry-after": "3"}, body, model.provider)
    assert isinstance(error, UpstreamError)
    assert isinstance(orjson.loads(error.body()), dict)


@BOUNDED
@given(st.one_of(anthropic_messages, anthropic_events), st.integers(100, 599), st.booleans())
def test_anthropic_answers_and_errors_never_crash(doc: Any, status: int, schema: bool) -> None:
    decode_whole("anthropic", CLAUDE, doc, status, schema)


@BOUNDED
@given(gemini_events, st.integers(100, 599), st.booleans())
@example({"candidates": [{"finishReason": {"a": 1}}]}, 400, False)
@example({"error": {"code": 400, "details": [{"reason": []}]}}, 400, False)
def test_gemini_answers_and_errors_never_crash(doc: Any, status: int, schema: bool) -> None:
    decode_whole("gemini", GEMINI, doc, status, schema)
