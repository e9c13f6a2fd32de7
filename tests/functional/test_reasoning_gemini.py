"""Gemini reasoning end to end: the official openai SDK → gearshift → the mock Gemini, on the
default catalog's Gemini models.

The mock behaves as Gemini 3 and later do where gearshift depends on it: it signs its function
calls and refuses the next turn unless the first call comes back with its signature (or
Google's placeholder), refuses a thinking level the model does not accept, and reports thought
tokens. So a tool loop that passes proves the signature made the round trip through the
client's tool-call ids.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from gearshift.config import load
from gearshift.mock import MockState
from gearshift.providers import REGISTRY, carry
from gearshift.serve.accounting import Tokens, cost
from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
KEY = "AIzaTestProviderKey0123456789"
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
    """The default catalog, only Gemini keyed, its base URL on the mock."""
    env = {"GEMINI_API_KEY": KEY, "GEARSHIFT_GEMINI_BASE_URL": str(mock.make_url("/v1beta"))}
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
    calls = []
    events = await client.chat.completions.create(
        model=model, messages=messages, tools=TOOLS, stream=True, **extra
    )
    async for chunk in events:
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or ():
                assert call.id is not None, "calls arrive whole"
                assert call.function is not None
                calls.append(
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": call.function.name,
                            "arguments": call.function.arguments,
                        },
                    }
                )
    return text or None, calls


def _next_messages(calls: list[dict[str, Any]]) -> list[Any]:
    results = [{"role": "tool", "tool_call_id": c["id"], "content": "sunny, 21C"} for c in calls]
    return [*ASK, {"role": "assistant", "content": None, "tool_calls": calls}, *results]


def _sent_signature(state: MockState, n: int) -> Any:
    """The thoughtSignature on the first functionCall gearshift sent in request ``n``."""
    contents = state.requests[n].body["contents"]
    model_turn = next(c for c in contents if c["role"] == "model")
    return next(p for p in model_turn["parts"] if "functionCall" in p).get("thoughtSignature")


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_tool_loop_carries_the_thought_signature_through_the_client(
    aiohttp_server: ServerFactory,
    mock_upstream: TestServer,
    mock_state: MockState,
    stream: bool,
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        _, calls = await _turn(client, "gemini-3.8-flash", ASK, stream)
        assert [c["function"]["name"] for c in calls] == ["get_weather"]
        plain, state = carry.unwrap(calls[0]["id"])
        assert state is not None, "the id carries the signature"
        assert state["m"] == "gemini-3.8-flash"
        assert plain.startswith("call_")
        text, more = await _turn(client, "gemini-3.8-flash", _next_messages(calls), stream)
    assert more == []
    assert text is not None
    assert text.startswith("Mock answer from gemini-3.8-flash")
    assert len(mock_state.requests) == 2, "the second turn was not refused and retried"
    assert _sent_signature(mock_state, 1) == state["g"], "the mock's own signature came back"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_another_models_signature_is_replaced_by_the_placeholder(
    aiohttp_server: ServerFactory,
    mock_upstream: TestServer,
    mock_state: MockState,
    stream: bool,
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        _, calls = await _turn(client, "gemini-4-carbon", ASK, stream)
        text, _ = await _turn(client, "gemini-3.8-flash", _next_messages(calls), stream)
    assert text is not None
    assert text.startswith("Mock answer from gemini-3.8-flash")
    assert mock_state.requests[1].path.endswith(
        "/models/gemini-3.8-flash:" + ("streamGenerateContent" if stream else "generateContent")
    )
    assert _sent_signature(mock_state, 1) == "skip_thought_signature_validator"


@pytest.mark.parametrize(
    ("model", "effort", "level"),
    [
        ("gemini-4-carbon", "minimal", "low"),  # Carbon refuses minimal: its lowest level
        ("gemini-4-carbon", "xhigh", "high"),  # and tops out at high
        ("gemini-4-hydrogen", "max", "xhigh"),
        ("gemini-3.5-flash-lite", "none", "minimal"),  # no current model turns thinking off
    ],
)
async def test_reasoning_effort_reaches_gemini_as_a_thinking_level(
    aiohttp_server: ServerFactory,
    mock_upstream: TestServer,
    mock_state: MockState,
    model: str,
    effort: str,
    level: str,
) -> None:
    async with await _client(aiohttp_server, mock_upstream) as client:
        answer = await client.chat.completions.create(
            model=model,
            messages=ASK,
            reasoning_effort=effort,  # type: ignore[arg-type]
        )
    assert answer.choices[0].message.content
    (sent,) = mock_state.requests
    assert sent.body["generationConfig"]["thinkingConfig"] == {"thinkingLevel": level}


async def test_thought_tokens_are_priced_as_output_in_the_cost_header(
    aiohttp_server: ServerFactory, mock_upstream: TestServer
) -> None:
    config = _config(mock_upstream)
    async with await _client(aiohttp_server, mock_upstream) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="gemini-4-carbon", messages=ASK, reasoning_effort="high"
        )
    answer = raw.parse()
    assert answer.usage is not None
    assert answer.usage.completion_tokens_details is not None
    thoughts = answer.usage.completion_tokens_details.reasoning_tokens
    assert thoughts is not None
    assert thoughts > 0, "the mock thought, and said so"
    assert answer.usage.completion_tokens > thoughts, "thoughts are within completion tokens"
    model = config.models["gemini-4-carbon"]
    tokens = Tokens(answer.usage.prompt_tokens, answer.usage.completion_tokens, reasoning=thoughts)
    expected = cost(model, tokens)
    by_hand = (
        answer.usage.prompt_tokens * 4.00 + answer.usage.completion_tokens * 20.00
    ) / 1e6  # the catalog's prices: thoughts at the output price
    assert expected == pytest.approx(by_hand)
    assert float(raw.headers["x-gearshift-cost-usd"]) == pytest.approx(by_hand, abs=1e-9)


# ---------------------------------------------------------------- the mock, as Gemini 3+


async def _native(mock: TestServer, model: str, body: dict[str, Any]) -> tuple[int, Any]:
    url = mock.make_url(f"/v1beta/models/{model}:generateContent")
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, json=body, headers={"x-goog-api-key": KEY}) as resp,
    ):
        return resp.status, await resp.json()


_DECLARED = [{"functionDeclarations": [{"name": "get_weather"}]}]
_ASK_NATIVE = {"role": "user", "parts": [{"text": "Weather in Lyon?"}]}


def _loop(call_part: dict[str, Any]) -> dict[str, Any]:
    answer = {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}
    contents = [_ASK_NATIVE, {"role": "model", "parts": [call_part]}, {"parts": [answer]}]
    return {"contents": contents, "tools": _DECLARED}


async def test_the_mock_refuses_a_call_without_its_signature(mock_upstream: TestServer) -> None:
    status, first = await _native(
        mock_upstream, "gemini-4-carbon", {"contents": [_ASK_NATIVE], "tools": _DECLARED}
    )
    assert status == 200
    (signed,) = first["candidates"][0]["content"]["parts"]
    assert signed["thoughtSignature"]
    assert first["usageMetadata"]["thoughtsTokenCount"] > 0
    unsigned = {"functionCall": signed["functionCall"]}
    status, error = await _native(mock_upstream, "gemini-4-carbon", _loop(unsigned))
    assert status == 400
    assert error["error"]["status"] == "INVALID_ARGUMENT"
    assert "missing a thought_signature" in error["error"]["message"]
    status, _ = await _native(mock_upstream, "gemini-4-carbon", _loop(signed))
    assert status == 200
    status, _ = await _native(mock_upstream, "gemini-3.8-flash", _loop(signed))
    assert status == 400, "a signature is valid for its own model only"
    placeholder = {**unsigned, "thoughtSignature": "skip_thought_signature_validator"}
    status, _ = await _native(mock_upstream, "gemini-3.8-flash", _loop(placeholder))
    assert status == 200


@pytest.mark.parametrize(
    ("model", "config"),
    [
        ("gemini-3.8-flash", {"thinkingLevel": "minimal"}),
        ("gemini-4-carbon", {"thinkingLevel": "minimal"}),
        ("gemini-4-carbon", {"thinkingLevel": "xhigh"}),
        ("gemini-3.5-flash-lite", {"thinkingLevel": "low", "thinkingBudget": 1024}),
    ],
)
async def test_the_mock_refuses_a_thinking_config_the_model_does_not_take(
    mock_upstream: TestServer, model: str, config: dict[str, Any]
) -> None:
    body = {"contents": [_ASK_NATIVE], "generationConfig": {"thinkingConfig": config}}
    status, error = await _native(mock_upstream, model, body)
    assert status == 400
    assert error["error"]["status"] == "INVALID_ARGUMENT"
