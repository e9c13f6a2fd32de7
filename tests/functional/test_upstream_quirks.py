"""Upstreams that misbehave in ways the mock does not: redirects, streams that linger after
[DONE] or end without a blank line, errors as the first event."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import MakeConfig, solo

from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient]]
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
CHUNK = (
    b'data: {"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":{"content":"hello"},"finish_reason":null}]}\n\n'
)


async def _gateway(
    aiohttp_client: ClientFactory, make_config: MakeConfig, upstream: TestServer
) -> TestClient:
    config = make_config(environ={"GEARSHIFT_OPENAI_BASE_URL": str(upstream.make_url("/v1"))})
    return await aiohttp_client(create_app(config))


async def test_redirects_are_not_followed(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    followed: list[dict[str, str]] = []

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(dict(request.headers))
        return web.json_response({"choices": []})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    client = await _gateway(aiohttp_client, make_config, await aiohttp_server(app))
    for stream in (False, True):
        resp = await client.post("/v1/chat/completions", json={**BODY, "stream": stream})
        assert resp.status == 502
        assert (await resp.json())["error"]["type"] == "server_error"
    assert followed == [], "the prompt and the provider key never go to a redirect target"


async def test_stream_ends_at_done_even_if_the_upstream_lingers(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    async def lingering(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(CHUNK)
        await resp.write(b"data: [DONE]\n\n")
        await asyncio.Event().wait()  # never ends its body
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", lingering)
    client = await _gateway(aiohttp_client, make_config, await aiohttp_server(app))
    resp = await client.post("/v1/chat/completions", json={**BODY, "stream": True})
    async with asyncio.timeout(5):
        raw = await resp.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"error"' not in raw


async def test_a_last_event_without_its_blank_line_still_counts(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    async def terse(request: web.Request) -> web.Response:
        return web.Response(body=CHUNK + b"data: [DONE]\n", content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", terse)
    client = await _gateway(aiohttp_client, make_config, await aiohttp_server(app))
    raw = await (await client.post("/v1/chat/completions", json={**BODY, "stream": True})).read()
    assert b"hello" in raw
    assert b'"error"' not in raw


async def test_an_error_as_the_first_event_is_a_plain_error_response(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    toml = solo("gpt-4o-error-first")
    client = await aiohttp_client(create_app(make_config(toml)))
    resp = await client.post(
        "/v1/chat/completions", json={**BODY, "model": "gpt-4o-error-first", "stream": True}
    )
    # Nothing was sent yet, so the client gets an HTTP error it can retry, not a 200.
    assert resp.status == 502
    body: Any = await resp.json()
    assert body["error"]["message"] == "upstream exploded"


async def test_oversized_upstream_body_is_refused(
    aiohttp_server: ServerFactory, aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    async def huge(request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps({"choices": [], "pad": "x" * 4096}), content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", huge)
    server = await aiohttp_server(app)
    config = make_config(
        "[server]\nmax_response_bytes = 1024\n",
        environ={"GEARSHIFT_OPENAI_BASE_URL": str(server.make_url("/v1"))},
    )
    client = await aiohttp_client(create_app(config))
    resp = await client.post("/v1/chat/completions", json=BODY)
    assert resp.status == 502
    assert "over 1024 bytes" in (await resp.json())["error"]["message"]
