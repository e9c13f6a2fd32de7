"""The Responses API and the Anthropic Messages API inbound, through the official clients,
unchanged: the ``openai`` SDK's ``responses`` (create, stream, a tool round trip chained by
``previous_response_id``, ``parse`` with a pydantic model, retrieve, input items, delete),
the OpenAI Agents SDK running an agent with a function tool, and the ``anthropic`` SDK
(create, stream, a tool round trip, count_tokens, an error's shape) — each routed like chat
by gearshift to the mock providers of all three wire formats (today's catalog)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pydantic
import pytest
from aiohttp.test_utils import TestServer
from upstreams import state

from gearshift.config import load
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
KEY = "gs-inbound-key-0123"
OTHER_KEY = "gs-other-team-key-4567"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def gearshift(
    aiohttp_server: ServerFactory, mock_upstream: TestServer, tmp_path: Path
) -> TestServer:
    base = str(mock_upstream.make_url(""))
    env = {
        "OPENAI_API_KEY": "sk-inbound-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-inbound-0123456789",
        "GEMINI_API_KEY": "g-inbound-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": base + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": base + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": base + "/v1beta",
        "GEARSHIFT_API_KEYS": f"{KEY},{OTHER_KEY}",
    }
    config_file = tmp_path / "g.toml"
    config_file.write_text(f"[store]\npath = '{tmp_path / 'responses.sqlite3'}'\n")
    config = load(config_file, environ=env, kinds=REGISTRY.keys())
    return await aiohttp_server(create_app(config))


def _openai(server: TestServer, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key=key, max_retries=0)


def _anthropic(server: TestServer) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=str(server.make_url("")), api_key=KEY, max_retries=0)


# ---------------------------------------------------------------- Responses API


async def test_responses_create_is_routed_and_answered_in_the_responses_shape(
    gearshift: TestServer, mock_upstream: TestServer
) -> None:
    async with _openai(gearshift) as client:
        raw = await client.responses.with_raw_response.create(
            model="auto", input="Classify the sentiment: 'I love it'.", instructions="Be brief."
        )
        response = raw.parse()  # the openai SDK parses synchronously
    assert response.object == "response"
    assert response.status == "completed"
    assert response.output_text.startswith("Mock answer from ")
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert raw.headers["x-gearshift-tier"] == "light"
    assert raw.headers["x-gearshift-model"] in response.output_text
    (sent,) = state(mock_upstream).requests
    assert sent.body  # a provider's own wire format, whichever served it


async def test_responses_stream_gives_the_sdk_its_event_sequence(gearshift: TestServer) -> None:
    async with (
        _openai(gearshift) as client,
        client.responses.stream(
            model="auto", input="Translate 'good morning' into Italian."
        ) as stream,
    ):
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created"
    assert "response.output_text.delta" in kinds
    assert kinds[-1] == "response.completed"
    assert final.output_text.startswith("Mock answer from ")
    assert final.usage is not None


async def test_a_tool_round_trip_chained_by_previous_response_id(gearshift: TestServer) -> None:
    async with _openai(gearshift) as client:
        first = await client.responses.create(
            model="auto", input="What is the weather in Paris?", tools=[WEATHER]
        )
        (call,) = [item for item in first.output if item.type == "function_call"]
        assert call.name == "get_weather"
        second = await client.responses.create(
            model="auto",
            previous_response_id=first.id,
            input=[
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}
            ],
            tools=[WEATHER],
        )
        assert second.output_text.startswith("Mock answer from ")
        assert second.previous_response_id == first.id
        kept = await client.responses.retrieve(first.id)
        assert kept.id == first.id
        items = await client.responses.input_items.list(second.id)
        assert [i.type for i in items.data] == ["function_call_output"]
        # Another proxy key does not see this key's responses.
        async with _openai(gearshift, OTHER_KEY) as other:
            with pytest.raises(openai.NotFoundError):
                await other.responses.retrieve(first.id)
            with pytest.raises(openai.NotFoundError):
                await other.responses.delete(first.id)
        await client.responses.delete(first.id)
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(first.id)
        with pytest.raises(openai.BadRequestError, match="Previous response with id"):
            await client.responses.create(model="auto", previous_response_id=first.id, input="hi")


async def test_parse_with_a_pydantic_model(gearshift: TestServer) -> None:
    class Verdict(pydantic.BaseModel):
        sentiment: str

    async with _openai(gearshift) as client:
        raw = await client.responses.with_raw_response.create(
            model="auto",
            input="Classify: 'great battery'.",
            text={
                "format": {
                    "type": "json_schema",
                    "name": "Verdict",
                    "schema": Verdict.model_json_schema(),
                }
            },
        )
    assert raw.parse().status == "completed"


async def test_a_bad_responses_request_gets_the_openai_error_shape(gearshift: TestServer) -> None:
    async with _openai(gearshift) as client:
        with pytest.raises(openai.BadRequestError) as err:
            await client.responses.create(
                model="auto", input="hi", tools=[{"type": "web_search_preview"}]
            )
    body = err.value.body
    assert isinstance(body, dict)
    assert body.get("message")


async def test_the_agents_sdk_runs_an_agent_with_a_function_tool(gearshift: TestServer) -> None:
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    calls: list[str] = []

    # The mock calls a tool with the arguments {"mock": true}: the tool takes them.
    @agents.function_tool
    def get_weather(mock: bool) -> str:
        """The weather where the user is."""
        calls.append(str(mock))
        return "sunny, 21C"

    client = _openai(gearshift)
    agent = agents.Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model="auto", openai_client=client),
    )
    result = await agents.Runner.run(agent, "What is the weather in Paris?")
    await client.close()
    assert calls  # the model asked for the tool, the SDK ran it, and the loop went on
    assert str(result.final_output).startswith("Mock answer from ")


# ---------------------------------------------------------------- Anthropic Messages API


async def test_messages_create_is_routed_and_answered_in_anthropics_shape(
    gearshift: TestServer,
) -> None:
    async with _anthropic(gearshift) as client:
        raw = await client.messages.with_raw_response.create(
            model="claude-opus-5-5",
            max_tokens=256,
            system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            messages=[{"role": "user", "content": "Classify the sentiment: 'I love it'."}],
        )
        message = await raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.stop_reason == "end_turn"
    assert message.content[0].type == "text"
    assert message.content[0].text.startswith("Mock answer from ")
    assert message.usage.output_tokens > 0
    assert raw.headers["x-gearshift-tier"] in ("light", "standard", "frontier")


async def test_messages_stream_and_a_tool_round_trip(gearshift: TestServer) -> None:
    tool = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": WEATHER["parameters"],
    }
    question = {"role": "user", "content": "What is the weather in Paris?"}
    async with _anthropic(gearshift) as client:
        async with client.messages.stream(
            model="claude-sonnet-5-5", max_tokens=512, messages=[question], tools=[tool]
        ) as stream:
            async for _ in stream:
                pass
            first = await stream.get_final_message()
        assert first.stop_reason == "tool_use"
        (use,) = [b for b in first.content if b.type == "tool_use"]
        assert use.name == "get_weather"
        history: list[Any] = [
            question,
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}],
            },
        ]
        second = await client.messages.create(
            model="claude-sonnet-5-5", max_tokens=512, messages=history, tools=[tool]
        )
    assert second.stop_reason == "end_turn"
    assert second.content[-1].type == "text"


async def test_count_tokens_and_an_errors_shape(gearshift: TestServer) -> None:
    async with _anthropic(gearshift) as client:
        counted = await client.messages.count_tokens(
            model="claude-haiku-5-5",
            messages=[{"role": "user", "content": "How many tokens is this sentence?"}],
        )
        assert 3 < counted.input_tokens < 40
        with pytest.raises(anthropic.NotFoundError) as err:
            await client.messages.create(
                model="claude-3-opus-20240229",
                max_tokens=64,
                messages=[{"role": "user", "content": "hi"}],
            )
    body = err.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"


async def test_a_coding_agents_request_shape_streams_through(gearshift: TestServer) -> None:
    """System blocks with cache_control, many tools, thinking on, streamed: as an agentic
    coding tool with an Anthropic base URL sends it."""
    tools = [
        {
            "name": f"tool_{i}",
            "description": f"Tool number {i}.",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
        }
        for i in range(24)
    ]
    async with (
        _anthropic(gearshift) as client,
        client.messages.stream(
            model="claude-sonnet-5-5",
            max_tokens=16000,
            system=[
                {"type": "text", "text": "You are a coding agent."},
                {
                    "type": "text",
                    "text": "Repository rules: " + "keep it tidy. " * 200,
                    "cache_control": {"type": "ephemeral"},
                },
            ],
            thinking={"type": "enabled", "budget_tokens": 4096},
            tools=tools,
            messages=[{"role": "user", "content": "Read README.md and summarise it."}],
        ) as stream,
    ):
        final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert json.dumps(final.model_dump())  # a whole, valid message
