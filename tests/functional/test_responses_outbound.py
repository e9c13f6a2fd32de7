"""OpenAI's GPT-6 models (``api = "responses"`` in the default catalog) are served through
``/v1/responses``: the official SDK speaks chat completions to gearshift, gearshift speaks
the Responses API to the mock, and the answers, tool calls, streams, usage and cost come
back as chat completions. A chat-API model still gets ``/v1/chat/completions``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer

from gearshift.config import Config, decode, resolve
from gearshift.mock import MOCK_STATE, MockState, create_mock_app
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
MODEL = "gpt-6.2-sol"  # $2.00 in, $10.00 out per 1M tokens (default catalog)
PIN = {"x-gearshift-route": "pin"}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris today?"}]
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
# The default catalog, and one chat-API model beside the GPT-6 family to compare with.
CHAT_MODEL = """
[[models]]
name = "chat-model"
provider = "openai"
upstream_id = "gpt-4o-mini"
tier = "light"
price_in = 0.15
price_out = 0.60
capabilities = ["tools", "vision", "json_schema", "streaming"]
"""


# A Responses model whose upstream id picks one of the mock's misbehaviours.
FAULTY = """
[[models]]
name = "faulty"
provider = "openai"
upstream_id = "gpt-6-{behaviour}"
api = "responses"
tier = "light"
price_in = 1
price_out = 1
capabilities = ["tools", "streaming"]
"""


def _config(mock: TestServer, toml: str = CHAT_MODEL) -> Config:
    env = {
        "OPENAI_API_KEY": "sk-test-provider-key-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": str(mock.make_url("/v1")),
    }
    raw = decode(toml.encode(), source="test.toml")
    return resolve(raw, source="test.toml", environ=env, kinds=REGISTRY.keys())


@pytest.fixture
async def mock(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(create_mock_app())


@pytest.fixture
def recorded(mock: TestServer) -> MockState:
    return mock.app[MOCK_STATE]


@pytest.fixture
async def client(aiohttp_server: ServerFactory, mock: TestServer) -> Any:
    server = await aiohttp_server(create_app(_config(mock)))
    sdk = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="unused", max_retries=0)
    async with sdk:
        yield sdk


def _sent(state: MockState, n: int = 1) -> list[Any]:
    assert len(state.requests) == n, [r.path for r in state.requests]
    return state.requests


async def test_text_is_served_through_the_responses_api(
    client: openai.AsyncOpenAI, recorded: MockState
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, max_tokens=200, extra_headers=PIN
    )
    answer = raw.parse()
    assert raw.headers["x-gearshift-model"] == MODEL
    assert answer.choices[0].message.content == (
        "Mock answer from gpt-6.2-sol: What is the weather in Paris today?"
    )
    assert answer.choices[0].finish_reason == "stop"
    (sent,) = _sent(recorded)
    assert sent.path == "/v1/responses"
    assert sent.body["store"] is False
    assert sent.body["max_output_tokens"] == 200
    assert sent.body["input"] == [
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": MESSAGES[0]["content"]}],
        }
    ]


async def test_tool_calls_whole(client: openai.AsyncOpenAI, recorded: MockState) -> None:
    answer = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, extra_headers=PIN
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", '{"mock": true}')
    (sent,) = _sent(recorded)
    assert sent.path == "/v1/responses"
    (tool,) = sent.body["tools"]
    assert tool == {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": TOOLS[0]["function"]["parameters"],
        "strict": False,
    }


async def test_tool_calls_streamed_with_usage(
    client: openai.AsyncOpenAI, recorded: MockState
) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=PIN,
    )
    chunks = [c async for c in stream]
    calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert {t.index for t in calls} == {0}
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    assert (calls[0].id or "").startswith("call_mock1")
    assert "".join(t.function.arguments or "" for t in calls if t.function) == '{"mock": true}'
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["tool_calls"]
    usage = chunks[-1].usage
    assert usage is not None
    assert not chunks[-1].choices
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 16  # the default effort: medium
    (sent,) = _sent(recorded)
    assert sent.path == "/v1/responses"
    assert sent.body["stream"] is True
    assert "stream_options" not in sent.body


async def test_streamed_text(client: openai.AsyncOpenAI, recorded: MockState) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, extra_headers=PIN
    )
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Mock answer from gpt-6.2-sol: What is the weather in Paris today?"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks), "usage only when the client asks for it"
    assert _sent(recorded)[0].path == "/v1/responses"


async def test_a_two_turn_tool_loop_carries_the_reasoning(
    client: openai.AsyncOpenAI, recorded: MockState
) -> None:
    first = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, extra_headers=PIN
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    history = [
        *MESSAGES,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"},
    ]
    second = await client.chat.completions.create(
        model=MODEL, messages=history, tools=TOOLS, extra_headers=PIN
    )
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == (
        "Mock answer from gpt-6.2-sol: What is the weather in Paris today?"
    )
    turn1, turn2 = _sent(recorded, 2)
    assert turn1.path == turn2.path == "/v1/responses"
    assert turn1.body["include"] == ["reasoning.encrypted_content"]
    # The reasoning the model produced before its call goes back with it, ids plain.
    assert turn2.body["input"][1:] == [
        {"type": "reasoning", "id": "rs_mock1", "summary": [], "encrypted_content": "gAAAAmock1"},
        {
            "type": "function_call",
            "call_id": "call_mock1",
            "name": "get_weather",
            "arguments": '{"mock": true}',
        },
        {"type": "function_call_output", "call_id": "call_mock1", "output": "18C and sunny"},
    ]


async def test_reasoning_tokens_are_in_the_usage_and_the_cost(
    client: openai.AsyncOpenAI, recorded: MockState
) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, reasoning_effort="high", extra_headers=PIN
    )
    usage = raw.parse().usage
    assert usage is not None
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 32  # the mock's for high
    assert usage.completion_tokens > 32, "reasoning tokens are within the completion tokens"
    expected = (usage.prompt_tokens * 2.00 + usage.completion_tokens * 10.00) / 1e6
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(expected, abs=1e-9)
    (sent,) = _sent(recorded)
    assert sent.path == "/v1/responses"


@pytest.mark.parametrize(("asked", "sent_effort"), [("low", "low"), ("minimal", "low")])
async def test_the_clients_effort_reaches_the_upstream_as_reasoning_effort(
    client: openai.AsyncOpenAI, recorded: MockState, asked: Any, sent_effort: str
) -> None:
    await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, reasoning_effort=asked, extra_headers=PIN
    )
    (sent,) = _sent(recorded)
    assert sent.path == "/v1/responses"
    assert sent.body["reasoning"] == {"effort": sent_effort}  # clamped to what sol takes
    assert "reasoning_effort" not in sent.body


async def test_a_chat_api_model_still_gets_chat_completions(
    client: openai.AsyncOpenAI, recorded: MockState
) -> None:
    for model in (MODEL, "chat-model"):
        answer = await client.chat.completions.create(
            model=model, messages=MESSAGES, tools=TOOLS, extra_headers=PIN
        )
        assert answer.choices[0].finish_reason == "tool_calls"
    responses, chat = _sent(recorded, 2)
    assert responses.path == "/v1/responses"
    assert chat.path == "/v1/chat/completions"
    assert chat.body["messages"] == MESSAGES
    assert chat.body["tools"] == TOOLS


async def _read(stream: Any, into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk.choices[0].delta.content or "" if chunk.choices else "")


# error-event: the mock's response.failed (server_error); stream-cut: the connection is
# dropped after two deltas (a transport error, no code).
@pytest.mark.parametrize(
    ("behaviour", "code"), [("error-event", "server_error"), ("stream-cut", None)]
)
async def test_a_stream_that_fails_after_its_first_content_ends_with_an_error(
    aiohttp_server: ServerFactory, mock: TestServer, behaviour: str, code: str | None
) -> None:
    server = await aiohttp_server(create_app(_config(mock, FAULTY.format(behaviour=behaviour))))
    sdk = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)
    texts: list[str] = []
    # The cut waits until gearshift has answered, so it cannot land with the first bytes.
    mock.app[MOCK_STATE].cut_gate = gate = asyncio.Event()
    async with sdk:
        stream = await sdk.chat.completions.create(
            model="faulty", messages=MESSAGES, stream=True, extra_headers=PIN
        )
        gate.set()
        with pytest.raises(openai.APIError) as caught:
            await _read(stream, texts)
    assert "".join(texts).startswith("Mock"), "the content before the failure reached the client"
    assert caught.value.code == code
    assert mock.app[MOCK_STATE].requests[0].path == "/v1/responses"


async def test_a_withdrawn_responses_model_is_a_404(
    aiohttp_server: ServerFactory, mock: TestServer
) -> None:
    server = await aiohttp_server(create_app(_config(mock, FAULTY.format(behaviour="withdrawn"))))
    sdk = openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)
    async with sdk:
        with pytest.raises(openai.NotFoundError) as caught:
            await sdk.chat.completions.create(model="faulty", messages=MESSAGES, extra_headers=PIN)
    assert caught.value.code == "model_not_found"
    assert mock.app[MOCK_STATE].requests[0].path == "/v1/responses"


# ---------------------------------------------------------------- the mock on its own


async def test_the_mock_refuses_what_gpt6_refuses_on_chat(mock: TestServer) -> None:
    direct = openai.AsyncOpenAI(base_url=str(mock.make_url("/v1")), api_key="x", max_retries=0)
    async with direct:
        with pytest.raises(openai.BadRequestError) as caught:
            await direct.chat.completions.create(model=MODEL, messages=MESSAGES, tools=TOOLS)
        assert caught.value.param == "reasoning_effort"
        assert "use /v1/responses or set reasoning_effort to 'none'" in caught.value.message
        with pytest.raises(openai.BadRequestError) as caught:
            await direct.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=50)
        assert caught.value.param == "max_tokens"
        # Without tools, or at effort none, chat completions serve it.
        await direct.chat.completions.create(
            model=MODEL, messages=MESSAGES, tools=TOOLS, reasoning_effort="none"
        )
        models = {m.id async for m in direct.models.list()}
    assert {"gpt-6.2-astra", "gpt-6.2-sol", "gpt-6.1-terra", "gpt-6-luna"} <= models


async def test_the_mock_speaks_responses_to_the_official_sdk(mock: TestServer) -> None:
    direct = openai.AsyncOpenAI(base_url=str(mock.make_url("/v1")), api_key="x", max_retries=0)
    tool: Any = {"type": "function", "name": "get_weather", "parameters": None, "strict": False}
    async with direct:
        whole = await direct.responses.create(model=MODEL, input="Hello there", store=False)
        assert whole.output_text == "Mock answer from gpt-6.2-sol: Hello there"
        assert whole.usage is not None
        assert whole.usage.output_tokens_details.reasoning_tokens == 16
        async with direct.responses.stream(
            model=MODEL, input="Hello there", tools=[tool], reasoning={"effort": "none"}
        ) as stream:
            events = [e async for e in stream]
            final = await stream.get_final_response()
    numbers = [e.sequence_number for e in events]
    assert numbers == list(range(len(events)))
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    (call,) = final.output
    assert call.type == "function_call"
    assert call.arguments == '{"mock": true}'
    assert final.usage is not None
    assert final.usage.output_tokens_details.reasoning_tokens == 0
