"""The official openai SDK, unchanged, through gearshift to the Anthropic and Gemini mocks.

Each answer is compared with what the mock itself says for the very request gearshift sent
(replayed to the mock in its native format): the translation must not change a word.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer
from conftest import MakeConfig

from gearshift.mock import MOCK_STATE, MockState
from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES: list[Any] = [{"role": "user", "content": "Name three rivers in France please"}]
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
KEYS = {"anthropic": "sk-ant-test-provider-0123456789", "gemini": "AIzaTestProviderKey0123456789"}
PREFIX = {"anthropic": "/v1", "gemini": "/v1beta"}
UPSTREAM_ID = {"anthropic": "claude-mock", "gemini": "gemini-mock"}


def _config(kinds: list[str], mock: TestServer, model_ids: dict[str, str] | None = None) -> str:
    out = "use_default_catalog = false\n"
    for kind in kinds:
        out += (
            f"[[providers]]\nname = '{kind}'\nkind = '{kind}'\n"
            f"base_url = '{mock.make_url(PREFIX[kind])}'\napi_key = 'env:{kind.upper()}_KEY'\n"
        )
    for kind in kinds:
        upstream = (model_ids or {}).get(kind, UPSTREAM_ID[kind])
        out += (
            f"[[models]]\nname = 'm-{kind}'\nprovider = '{kind}'\nupstream_id = '{upstream}'\n"
            "tier = 'frontier'\nprice_in = 1\nprice_out = 2\n"
        )
    return out


async def _gateway(
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock: TestServer,
    kinds: list[str],
    model_ids: dict[str, str] | None = None,
) -> openai.AsyncOpenAI:
    env = {f"{k.upper()}_KEY": v for k, v in KEYS.items()}
    server = await aiohttp_server(create_app(make_config(_config(kinds, mock, model_ids), env)))
    return openai.AsyncOpenAI(base_url=str(server.make_url("/v1")), api_key="x", max_retries=0)


async def _native_text(mock: TestServer, state: MockState, kind: str) -> tuple[str, Any]:
    """Replay the last request gearshift sent to the mock, natively; return its text and
    its parsed answer (non-streaming)."""
    sent = state.requests[-1]
    body = dict(sent.body)
    body.pop("stream", None)
    path = sent.path.replace(":streamGenerateContent", ":generateContent")
    headers = {k: v for k, v in sent.headers.items() if k in ("x-api-key", "anthropic-version")}
    headers |= {k: v for k, v in sent.headers.items() if k == "x-goog-api-key"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(mock.make_url(path), json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        doc = orjson.loads(await resp.read())
    if kind == "anthropic":
        text = "".join(b["text"] for b in doc["content"] if b["type"] == "text")
    else:
        parts = doc["candidates"][0]["content"]["parts"]
        text = "".join(p.get("text", "") for p in parts)
    return text, doc


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_plain_answers_match_the_provider_word_for_word(
    kind: str,
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
    mock_state: MockState,
) -> None:
    client = await _gateway(aiohttp_server, make_config, mock_upstream, [kind])
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model="m-" + kind,
            messages=[{"role": "system", "content": "Be terse."}, *MESSAGES],
            max_tokens=50,
        )
        answer = raw.parse()
        native, doc = await _native_text(mock_upstream, mock_state, kind)
        assert answer.choices[0].message.content == native
        assert answer.choices[0].finish_reason == "stop"
        assert raw.headers["x-gearshift-provider"] == kind
        assert answer.usage is not None
        assert answer.usage.prompt_tokens > 0
        sent = mock_state.requests[0]
        if kind == "anthropic":
            assert sent.path == "/v1/messages"
            assert sent.headers["x-api-key"] == KEYS[kind]
            assert sent.headers["anthropic-version"] == "2023-06-01"
            assert sent.body["system"] == "Be terse."
            assert sent.body["max_tokens"] == 50
            assert answer.usage.completion_tokens == doc["usage"]["output_tokens"]
        else:
            assert sent.path == "/v1beta/models/gemini-mock:generateContent"
            assert sent.headers["x-goog-api-key"] == KEYS[kind]
            assert sent.body["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
            assert sent.body["generationConfig"]["maxOutputTokens"] == 50
            meta = doc["usageMetadata"]
            assert answer.usage.completion_tokens == meta["candidatesTokenCount"] + meta.get(
                "thoughtsTokenCount", 0
            )

        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="m-" + kind,
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        ]
        native, _ = await _native_text(mock_upstream, mock_state, kind)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == native
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1, "one id for the whole stream"


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_round_trip(
    kind: str,
    stream: bool,
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
    mock_state: MockState,
) -> None:
    client = await _gateway(aiohttp_server, make_config, mock_upstream, [kind])
    async with client:
        if stream:
            chunks = [
                c
                async for c in await client.chat.completions.create(
                    model="m-" + kind, messages=MESSAGES, tools=TOOLS, stream=True
                )
            ]
            calls: dict[int, dict[str, str]] = {}
            for c in chunks:
                for d in (c.choices[0].delta.tool_calls or []) if c.choices else []:
                    call = calls.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                    call["id"] += d.id or ""
                    call["name"] += (d.function.name or "") if d.function else ""
                    call["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
            assert list(calls) == [0]
            call_id, name, arguments = calls[0]["id"], calls[0]["name"], calls[0]["arguments"]
        else:
            answer = await client.chat.completions.create(
                model="m-" + kind, messages=MESSAGES, tools=TOOLS
            )
            finish = answer.choices[0].finish_reason
            assert answer.choices[0].message.content is None
            (tool_call,) = answer.choices[0].message.tool_calls or []
            call_id, name = tool_call.id, tool_call.function.name
            arguments = tool_call.function.arguments
        assert finish == "tool_calls"
        assert name == "get_weather"
        assert orjson.loads(arguments) == {"mock": True}
        assert call_id

        history: list[Any] = [
            *MESSAGES,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "18C and sunny"},
        ]
        final = await client.chat.completions.create(
            model="m-" + kind, messages=history, tools=TOOLS
        )
        assert final.choices[0].finish_reason == "stop"
        assert final.choices[0].message.content
    sent = mock_state.requests[-1].body
    if kind == "anthropic":
        last = sent["messages"][-1]
        assert last["role"] == "user"
        assert last["content"][0] == {
            "type": "tool_result",
            "tool_use_id": call_id,
            "content": "18C and sunny",
        }
    else:
        last = sent["contents"][-1]
        assert last["parts"][0]["functionResponse"]["name"] == "get_weather"


@pytest.mark.parametrize(
    ("kind", "behaviour", "error", "status"),
    [
        ("anthropic", "http-503", openai.InternalServerError, 503),  # Anthropic's 529
        ("anthropic", "http-429", openai.RateLimitError, 429),
        ("anthropic", "http-400", openai.BadRequestError, 400),
        ("gemini", "http-401", openai.AuthenticationError, 401),  # Gemini's 400 API_KEY_INVALID
        ("gemini", "http-429", openai.RateLimitError, 429),
        ("gemini", "http-500", openai.InternalServerError, 502),
    ],
)
async def test_provider_errors_reach_the_client_as_openai_errors(
    kind: str,
    behaviour: str,
    error: type[openai.APIStatusError],
    status: int,
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
) -> None:
    ids = {kind: f"{UPSTREAM_ID[kind]}-{behaviour}"}
    client = await _gateway(aiohttp_server, make_config, mock_upstream, [kind], ids)
    async with client:
        with pytest.raises(error) as info:
            await client.chat.completions.create(model="m-" + kind, messages=MESSAGES)
    assert info.value.status_code == status
    assert KEYS[kind] not in str(info.value.body)


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
@pytest.mark.parametrize("behaviour", ["error-event", "stream-cut"])
async def test_a_stream_failing_midway_ends_with_an_error_not_a_clean_end(
    kind: str,
    behaviour: str,
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
) -> None:
    ids = {kind: f"{UPSTREAM_ID[kind]}-{behaviour}"}
    client = await _gateway(aiohttp_server, make_config, mock_upstream, [kind], ids)
    # The cut waits until gearshift has answered, so it cannot land with the first bytes.
    mock_upstream.app[MOCK_STATE].cut_gate = gate = asyncio.Event()
    async with client:
        stream = await client.chat.completions.create(
            model="m-" + kind, messages=MESSAGES, stream=True
        )
        gate.set()
        with pytest.raises(openai.APIError):
            async for _ in stream:
                pass


async def test_an_overloaded_provider_falls_back_to_another_provider(
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
) -> None:
    ids = {"anthropic": "claude-mock-http-503"}
    client = await _gateway(
        aiohttp_server, make_config, mock_upstream, ["anthropic", "gemini"], ids
    )
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=MESSAGES, extra_body={"gearshift": {"tier": "frontier"}}
        )
    assert raw.headers["x-gearshift-provider"] == "gemini"
    assert raw.headers["x-gearshift-attempts"] == "2"
    assert raw.parse().choices[0].message.content


async def test_what_a_format_cannot_carry_goes_to_a_model_that_can(
    aiohttp_server: ServerFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
    mock_state: MockState,
) -> None:
    # Gemini (first: same price, earlier in the catalog) cannot read a web image URL;
    # Anthropic can: the request goes there, with nothing sent to Gemini.
    client = await _gateway(aiohttp_server, make_config, mock_upstream, ["gemini", "anthropic"])
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
    messages: list[Any] = [{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}]
    async with client:
        raw = await client.chat.completions.with_raw_response.create(
            model="auto", messages=messages, extra_body={"gearshift": {"tier": "frontier"}}
        )
        assert raw.headers["x-gearshift-provider"] == "anthropic"
        assert raw.headers["x-gearshift-attempts"] == "2"
        assert [r.api for r in mock_state.requests] == ["anthropic"]
        # With no model left that can carry it, the client gets a clear 400.
        only = await _gateway(aiohttp_server, make_config, mock_upstream, ["anthropic"])
        async with only:
            with pytest.raises(openai.BadRequestError) as info:
                await only.chat.completions.create(model="m-anthropic", messages=MESSAGES, n=2)
    assert "n=2" in str(info.value)
