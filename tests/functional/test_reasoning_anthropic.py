"""Anthropic reasoning end to end: the official openai SDK → gearshift → the mock Anthropic, on
the default catalog's Claude models.

The mock behaves as the current Claude models do where gearshift depends on it: thinking is
on unless disabled, a tool call comes after a signed thinking block, the next turn is refused
unless the assistant turn opens with that block, unmodified; forced tool use with thinking on
is refused, and so are sampling parameters and manual thinking budgets. So a tool loop that
passes proves the thinking block made the round trip through the client's tool-call ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer

from gearshift.config import load
from gearshift.mock import MockState
from gearshift.providers import REGISTRY, carry
from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
KEY = "sk-ant-test-provider-0123456789"
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Lyon today?"}]
PIN = {"x-gearshift-route": "pin"}


def _config(mock: TestServer) -> Any:
    """The default catalog, only Anthropic keyed, its base URL on the mock."""
    env = {"ANTHROPIC_API_KEY": KEY, "GEARSHIFT_ANTHROPIC_BASE_URL": str(mock.make_url("/v1"))}
    return load(None, environ=env, kinds=REGISTRY.keys())


async def _client(aiohttp_server: ServerFactory, mock: TestServer) -> openai.AsyncOpenAI:
    server = await aiohttp_server(create_app(_config(mock)))
    return openai.AsyncOpenAI(
        base_url=str(server.make_url("/v1")), api_key="x", max_retries=0, default_headers=PIN
    )


async def _turn(
    client: openai.AsyncOpenAI, model: str, messages: list[Any], stream: bool, **extra: Any
) -> tuple[str | None, list[dict[str, Any]]]:
    """One turn through gearshift: the answer's text and its tool calls (as the client would
    send them back)."""
    if not stream:
        answer = await client.chat.completions.create(
            model=model, messages=messages, tools=TOOLS, **extra
        )
        message = answer.choices[0].message
        calls = [c.model_dump(exclude_none=True) for c in message.tool_calls or ()]
        return message.content, calls
    text = ""
    calls: list[dict[str, Any]] = []
    events = await client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True, **extra
    )
    async for chunk in events:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or ():
                if call.id is not None:  # the first chunk of a call: its id and name
                    assert call.function is not None
                    function = {"name": call.function.name, "arguments": ""}
                    calls.append({"id": call.id, "type": "function", "function": function})
                if call.function is not None and call.function.arguments:
                    calls[call.index]["function"]["arguments"] += call.function.arguments
    return text or None, calls


def _next_messages(calls: list[dict[str, Any]]) -> list[Any]:
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "sunny, 21C"} for c in calls]
    return [*ASK, {"role": "assistant", "content": None, "tool_calls": calls}, *results]


def _answer_blocks(state: MockState, n: int) -> list[dict[str, Any]]:
    """The assistant turn gearshift sent in request ``n``."""
    messages = state.requests[n].body["messages"]
    turn = next(m for m in messages if m["role"] == "assistant")
    blocks: list[dict[str, Any]] = turn["content"]
    return blocks


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_tool_loop_carries_the_thinking_block_through_the_client(
    aiohttp_server: ServerFactory,
    mock_upstream: TestServer,
    mock_state: MockState,
    stream: bool,
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        _, calls = await _turn(client, "claude-sonnet-5-5", ASK, stream)
        assert [c["function"]["name"] for c in calls] == ["get_weather"]
        assert orjson.loads(calls[0]["function"]["arguments"]) == {"mock": True}
        plain, state = carry.unwrap(calls[0]["id"])
        assert state is not None, "the id carries the thinking block"
        assert state["m"] == "claude-sonnet-5-5"
        (thinking,) = state["a"]
        assert thinking["type"] == "thinking"
        assert thinking["thinking"] == "", "display omitted: only the signature"
        assert thinking["signature"]
        assert plain.startswith("toolu_")
        text, more = await _turn(client, "claude-sonnet-5-5", _next_messages(calls), stream)
    assert more == []
    assert text is not None
    assert text.startswith("Mock answer from claude-sonnet-5-5")
    assert len(mock_state.requests) == 2
    blocks = _answer_blocks(mock_state, 1)
    assert blocks[0] == thinking, "the mock's own block came back first, unmodified"
    assert blocks[1]["type"] == "tool_use"
    assert blocks[1]["id"] == plain, "the upstream gets its own id back"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_without_its_thinking_block_the_next_turn_is_refused(
    aiohttp_server: ServerFactory, mock_upstream: TestServer, stream: bool
) -> None:
    """The mock's check the tool loop above passes: plain ids bring nothing back (400)."""
    async with await _client(aiohttp_server, mock_upstream) as client:
        _, calls = await _turn(client, "claude-opus-5-5", ASK, stream)
        plain = [{**c, "id": carry.plain_id(c["id"])} for c in calls]
        with pytest.raises(openai.BadRequestError) as caught:
            await _turn(client, "claude-opus-5-5", _next_messages(plain), stream)
    assert "must start with a thinking block" in str(caught.value)


@pytest.mark.parametrize(
    ("model", "effort", "thinking", "output_config", "header"),
    [
        ("claude-sonnet-5-5", "low", "adaptive", {"effort": "low"}, "low"),
        ("claude-opus-5-5", "none", "adaptive", {"effort": "low"}, "low"),  # always thinks
        ("claude-haiku-5-5", "none", "disabled", None, "none"),
        ("claude-haiku-5-5", "minimal", "disabled", None, "none"),  # clamped down to none
    ],
)
async def test_reasoning_effort_reaches_anthropic_as_output_config_effort(
    aiohttp_server: ServerFactory,
    mock_upstream: TestServer,
    mock_state: MockState,
    model: str,
    effort: Any,
    thinking: str,
    output_config: Any,
    header: str,
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=ASK, temperature=0.2, reasoning_effort=effort
        )
    answer = raw.parse()
    assert answer.choices[0].message.content
    assert raw.headers["x-gearshift-effort"] == header
    assert raw.headers["x-gearshift-dropped-params"] == "temperature"
    (sent,) = mock_state.requests
    assert sent.body.get("output_config") == output_config
    assert sent.body["thinking"]["type"] == thinking
    if thinking == "adaptive":
        assert sent.body["thinking"]["display"] == "omitted"


async def test_thinking_tokens_are_reported_as_reasoning_tokens(
    aiohttp_server: ServerFactory, mock_upstream: TestServer
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        answer = await client.chat.completions.create(
            model="claude-opus-5-5", messages=ASK, tools=TOOLS, reasoning_effort="high"
        )
    assert answer.usage is not None
    assert answer.usage.completion_tokens_details is not None
    thinking = answer.usage.completion_tokens_details.reasoning_tokens
    assert thinking is not None
    assert 0 < thinking < answer.usage.completion_tokens


async def test_a_forced_tool_choice_goes_as_auto_to_a_thinking_model(
    aiohttp_server: ServerFactory, mock_upstream: TestServer, mock_state: MockState
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        _, calls = await _turn(
            client, "claude-sonnet-5-5", ASK, False, tool_choice="required", reasoning_effort="high"
        )
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    (sent,) = mock_state.requests
    assert sent.body["tool_choice"] == {"type": "auto"}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_json_schema_goes_as_native_structured_output(
    aiohttp_server: ServerFactory, mock_upstream: TestServer, mock_state: MockState, stream: bool
) -> None:
    schema = {"type": "object", "properties": {"mock": {"type": "boolean"}}}
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    async with await _client(aiohttp_server, mock_upstream) as client:
        if stream:
            events = await client.chat.completions.create(
                model="claude-haiku-5-5", messages=ASK, response_format=fmt, stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in events if c.choices])
        else:
            answer = await client.chat.completions.create(
                model="claude-haiku-5-5", messages=ASK, response_format=fmt
            )
            text = answer.choices[0].message.content or ""
    assert text == '{"mock": true}'
    (sent,) = mock_state.requests
    assert sent.body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    assert "tools" not in sent.body
