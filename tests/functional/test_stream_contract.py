"""The stream contract against a scripted Anthropic upstream on loopback: nothing after the
terminator, and a failure before the first content still falls back invisibly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from conftest import MakeConfig

from gearshift.serve.app import create_app

ServerFactory = Callable[..., Awaitable[TestServer]]


def _ev(data: dict[str, object]) -> bytes:
    return b"event: " + str(data["type"]).encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


START = _ev(
    {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "model": "claude",
            "usage": {"input_tokens": 3, "output_tokens": 1},
        },
    }
)
TEXT = _ev(
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
)
END = _ev(
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}
)
STOP = _ev({"type": "message_stop"})
OVERLOADED = _ev({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
PING = _ev({"type": "ping"})
SCRIPTS = {
    "claude-stop-then-error": START + TEXT + END + STOP + OVERLOADED,
    "claude-start-then-overloaded": START + PING + OVERLOADED,
    "claude-ok": START + TEXT + END + STOP,
}


async def _messages(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(SCRIPTS[body["model"]])  # one write: the events arrive in one read
    await resp.write_eof()
    return resp


def _config(upstream: TestServer, first: str) -> str:
    out = (
        "use_default_catalog = false\n[[providers]]\nname = 'scripted'\nkind = 'anthropic'\n"
        f"base_url = '{upstream.make_url('/v1')}'\napi_key = 'k'\n"
    )
    for name, price in ((first, 1), ("claude-ok", 2)):
        out += (
            f"[[models]]\nname = '{name}'\nprovider = 'scripted'\ntier = 'frontier'\n"
            f"price_in = {price}\nprice_out = {price}\n"
        )
    return out


async def _stream(
    aiohttp_server: ServerFactory, make_config: MakeConfig, first: str
) -> tuple[dict[str, str], list[bytes]]:
    app = web.Application()
    app.router.add_post("/v1/messages", _messages)
    upstream = await aiohttp_server(app)
    gateway = await aiohttp_server(create_app(make_config(_config(upstream, first))))
    body = {"model": "auto", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.make_url("/v1/chat/completions"), json=body) as resp,
    ):
        assert resp.status == 200
        raw = await resp.read()
        headers = dict(resp.headers)
    return headers, [line for line in raw.split(b"\n") if line.startswith(b"data: ")]


async def test_nothing_follows_the_terminator(
    aiohttp_server: ServerFactory, make_config: MakeConfig
) -> None:
    _, lines = await _stream(aiohttp_server, make_config, "claude-stop-then-error")
    assert lines[-1] == b"data: [DONE]"
    assert not any(b'"error"' in line for line in lines)


async def test_an_error_before_any_content_falls_back_invisibly(
    aiohttp_server: ServerFactory, make_config: MakeConfig
) -> None:
    headers, lines = await _stream(aiohttp_server, make_config, "claude-start-then-overloaded")
    assert headers["x-gearshift-model"] == "claude-ok"
    assert headers["x-gearshift-attempts"] == "2"
    assert lines[-1] == b"data: [DONE]"
    assert not any(b'"error"' in line for line in lines)
    assert sum(b'"role":"assistant"' in line for line in lines) == 1
