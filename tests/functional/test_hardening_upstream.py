"""Hardening against a misbehaving upstream: what it sends never carries gearshift's provider
key to a client, never makes gearshift hold more than its limits, and a body of the wrong
kind is an upstream failure (fallen back on), not an answer."""

from __future__ import annotations

import resource
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from misbehaving import KEY, bomb, create_misbehaving_app, json_error, one_provider, script
from misbehaving import with_backup as evil_then_backup
from upstreams import MESSAGES, sse_events

from gearshift.mock import create_mock_app
from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
ServerFactory = Callable[..., Awaitable[TestServer]]
HEADERS = {"x-gearshift-tier": "light"}


@pytest.fixture
async def evil(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(create_misbehaving_app())


async def ask(client: TestClient, stream: bool = False) -> Any:
    body = {"model": "auto", "messages": MESSAGES, "stream": stream}
    return await client.post("/v1/chat/completions", json=body, headers=HEADERS)


LEAKY_ERRORS = {
    "openai": {"error": {"message": "no", "type": KEY, "code": KEY, "param": KEY}},
    "anthropic": {"type": "error", "error": {"type": KEY, "message": f"bad key {KEY}"}},
    "gemini": {"error": {"code": 400, "status": KEY, "message": "no", "details": []}},
}


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("stream", [False, True])
async def test_no_upstream_error_field_carries_the_provider_key(
    aiohttp_client: ClientFactory, evil: TestServer, kind: str, stream: bool
) -> None:
    ids = {"x-request-id": f"req-{KEY}", "request-id": KEY}
    leaky = json_error(400, LEAKY_ERRORS[kind], **ids)
    s = script(evil)
    s.status, s.headers, s.body = leaky.status, leaky.headers, leaky.body
    client = await aiohttp_client(create_app(one_provider(evil, kind)))
    resp = await ask(client, stream)
    body = await resp.read()
    assert resp.status == 400
    assert KEY.encode() not in body
    for name, value in resp.headers.items():
        assert KEY not in value, f"{name} carries the key"
    assert "x-upstream-request-id" in resp.headers, "the id is kept, scrubbed"
    assert len(resp.headers["x-upstream-request-id"]) <= 128


async def test_an_upstream_request_id_is_bounded_and_printable(
    aiohttp_client: ClientFactory, evil: TestServer
) -> None:
    s = script(evil)
    s.status, s.body = 200, _answer()
    s.headers = {"content-type": "application/json", "x-request-id": "a" * 5000}
    client = await aiohttp_client(create_app(one_provider(evil)))
    resp = await ask(client)
    assert resp.status == 200
    assert len(resp.headers["x-upstream-request-id"]) <= 128


def _answer() -> bytes:
    return (
        b'{"id":"c","object":"chat.completion","created":1,"model":"m-up","choices":'
        b'[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}'
    )


async def test_a_text_body_to_a_stream_request_is_an_upstream_failure(
    aiohttp_client: ClientFactory, evil: TestServer, aiohttp_server: ServerFactory
) -> None:
    """A stream request answered ``200 text/plain`` is not a stream: with nowhere else to
    go it is a 502 before any byte (never the text, which here holds the key); with a
    backup, the backup answers."""
    s = script(evil)
    s.status, s.headers = 200, {"content-type": "text/plain"}
    s.body = f"upstream maintenance page; key={KEY}\n".encode()
    client = await aiohttp_client(create_app(one_provider(evil)))
    resp = await ask(client, stream=True)
    body = await resp.read()
    assert resp.status == 502
    assert KEY.encode() not in body
    assert resp.content_type == "application/json"

    backup = await aiohttp_server(create_mock_app())
    client = await aiohttp_client(create_app(evil_then_backup(evil, backup)))
    resp = await ask(client, stream=True)
    assert resp.status == 200
    events = await sse_events(resp)
    assert events[-1] == "[DONE]"
    assert KEY not in str(events)
    assert resp.headers["x-gearshift-attempt-log"].startswith("m@evil:protocol")


async def test_lines_that_are_not_sse_are_never_forwarded(
    aiohttp_client: ClientFactory, evil: TestServer
) -> None:
    """Even labelled an event stream, a body of plain lines is not passed on as is."""
    s = script(evil)
    s.status, s.headers = 200, {"content-type": "text/event-stream"}
    s.body = f"this is not sse {KEY}\n\n".encode()
    client = await aiohttp_client(create_app(one_provider(evil)))
    resp = await ask(client, stream=True)
    body = await resp.read()
    assert resp.status == 502
    assert KEY.encode() not in body


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def test_the_response_limit_counts_decompressed_bytes(
    aiohttp_client: ClientFactory, evil: TestServer
) -> None:
    """A small gzip answer that inflates past ``max_response_bytes`` is refused (502), and
    gearshift never holds the inflated body: peak memory stays far below it."""
    script(evil).gzip_bomb = size = 256 * 1024 * 1024  # 256 MiB of zeros, ~250 KB sent
    assert len(bomb(size)) < 1024 * 1024
    cfg = one_provider(evil, extra="[server]\nmax_response_bytes = 1048576\n")
    client = await aiohttp_client(create_app(cfg))
    before = _rss_mb()
    resp = await ask(client)
    body = await resp.json()
    assert resp.status == 502
    assert "over 1048576 bytes" in body["error"]["message"]
    assert _rss_mb() - before < 128, "the inflated body was never held whole"
