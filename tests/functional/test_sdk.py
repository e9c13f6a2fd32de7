"""The official openai SDK, unchanged, against a running gearshift: same answers as direct."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp.test_utils import TestServer
from conftest import MakeConfig, solo

from gearshift.mock import MockState
from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
async def gearshift_server(aiohttp_server: ServerFactory, make_config: MakeConfig) -> TestServer:
    return await aiohttp_server(
        create_app(make_config(environ={"GEARSHIFT_API_KEYS": "gs-team-key"}))
    )


def _base(server: TestServer) -> str:
    return str(server.make_url("/v1"))


def _answer(completion: Any) -> tuple[str | None, str | None]:
    return completion.choices[0].message.content, completion.choices[0].finish_reason


def _streamed(chunks: list[Any]) -> tuple[str, str | None, Any]:
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next(
        (c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason),
        None,
    )
    usage = next((c.usage for c in chunks if c.usage), None)
    return text, finish, usage


async def test_async_sdk_non_stream_matches_direct(
    gearshift_server: TestServer, mock_upstream: TestServer
) -> None:
    via = openai.AsyncOpenAI(base_url=_base(gearshift_server), api_key="gs-team-key", max_retries=0)
    direct = openai.AsyncOpenAI(base_url=_base(mock_upstream), api_key="x", max_retries=0)
    async with via, direct:
        through = await via.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.2
        )
        straight = await direct.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, temperature=0.2
        )
        raw = await via.chat.completions.with_raw_response.create(model="auto", messages=MESSAGES)
    assert _answer(through) == _answer(straight)
    assert through.usage == straight.usage
    assert raw.headers["x-gearshift-model"] == "gpt-4o-mini"
    assert _answer(raw.parse())[0] == _answer(straight)[0]


async def test_async_sdk_stream_matches_direct(
    gearshift_server: TestServer, mock_upstream: TestServer
) -> None:
    via = openai.AsyncOpenAI(base_url=_base(gearshift_server), api_key="gs-team-key", max_retries=0)
    direct = openai.AsyncOpenAI(base_url=_base(mock_upstream), api_key="x", max_retries=0)
    async with via, direct:
        for options in (None, {"include_usage": True}):
            extra: dict[str, Any] = {"stream_options": options} if options else {}
            through = [
                c
                async for c in await via.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra
                )
            ]
            straight = [
                c
                async for c in await direct.chat.completions.create(
                    model="gpt-4o-mini", messages=MESSAGES, stream=True, **extra
                )
            ]
            assert _streamed(through)[:2] == _streamed(straight)[:2]
            assert _streamed(through)[0].startswith("Mock answer from gpt-4o-mini")
            assert len(through) == len(straight)
            if options:
                assert _streamed(through)[2] == _streamed(straight)[2] is not None
            else:
                assert _streamed(through)[2] is None


def _sync_round_trip(gs_base: str, mock_base: str) -> None:
    via = openai.OpenAI(base_url=gs_base, api_key="gs-team-key", max_retries=0)
    direct = openai.OpenAI(base_url=mock_base, api_key="x", max_retries=0)
    with via, direct:
        assert _answer(
            via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        ) == _answer(direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES))
        through = list(
            via.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        )
        straight = list(
            direct.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        )
        assert _streamed(through) == _streamed(straight)
        models = [m.id for m in via.models.list()]
        assert "gpt-4o" in models
        assert "auto" in models


async def test_sync_sdk_stream_and_not(
    gearshift_server: TestServer, mock_upstream: TestServer
) -> None:
    # The sync client blocks, so it runs in a thread while the servers run on this loop.
    await asyncio.to_thread(_sync_round_trip, _base(gearshift_server), _base(mock_upstream))


async def test_sdk_sees_openai_errors(gearshift_server: TestServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=_base(gearshift_server), api_key="gs-team-key", max_retries=0
    ) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="gpt-7", messages=MESSAGES)
        assert missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="gpt-4o", messages=[])
        assert bad.value.param == "messages"
    async with openai.AsyncOpenAI(
        base_url=_base(gearshift_server), api_key="wrong", max_retries=0
    ) as client:
        with pytest.raises(openai.AuthenticationError):
            await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)


async def test_sdk_raises_on_a_truncated_stream(
    aiohttp_server: ServerFactory, make_config: MakeConfig, mock_state: MockState
) -> None:
    toml = solo("gpt-4o-stream-cut")
    server = await aiohttp_server(create_app(make_config(toml)))
    # The cut waits until gearshift has answered, so it cannot land with the first bytes.
    mock_state.cut_gate = gate = asyncio.Event()
    async with openai.AsyncOpenAI(base_url=_base(server), api_key="x", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-stream-cut", messages=MESSAGES, stream=True
        )
        gate.set()
        received: list[Any] = []

        async def consume() -> None:
            async for chunk in stream:
                received.append(chunk)

        with pytest.raises(openai.APIError, match="cut the connection"):
            await consume()
        assert received, "the chunks before the cut were delivered"
