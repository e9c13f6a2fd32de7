"""Fault injection on loopback: every failure mode of the mock upstream, by stream / non-stream
and wire format, and what the client sees — the answer from the fallback model, the upstream's
own 4xx, or (once bytes have gone out) an explicit final error event.

Two real mock servers: the primary provider (the wire format under test, cheaper, so it is
tried first) misbehaves; the backup (OpenAI format) is healthy.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient, TestServer
from upstreams import HEADERS, MESSAGES, content_of, sse_events, state, two_providers

from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]


# What the client sees: F = the backup's answer (invisible fallback), E = the primary's
# partial answer then a final error event, P = the upstream's 4xx passed on.
BEFORE_ANY_BYTE = {
    "http-500": "F",
    "http-503": "F",  # Anthropic answers 529 overloaded
    "http-429": "F",
    "http-401": "F",  # gearshift's key refused: another provider serves
    "http-502": "F",  # an HTML page from a proxy
    "http-400": "P",
    "withdrawn": "F",  # 404: the model gearshift chose is gone (a catalog fault)
    "hang": "F",  # no headers within first_byte / total
    "reset": "F",  # connection dropped before the response
    "error-first": "F",  # an error as the first event / an error body with 200
}
NON_STREAM = {
    **BEFORE_ANY_BYTE,
    "stall": "F",  # half the body, then nothing until `total`
    "reset-body": "F",  # half the body, then the connection drops
    "stream-cut": "F",
    "garbage": "F",
    "error-event": "F",
}
STREAM = {
    **BEFORE_ANY_BYTE,
    "stall": "E",  # first content, then an idle gap
    "reset-body": "E",  # cut after two content events
    "stream-cut": "E",
    "error-event": "E",
    # Garbage right after the head: OpenAI's role chunk is already out (bytes pass through),
    # a translated stream writes nothing before its first content.
    "garbage": {"openai": "E", "anthropic": "F", "gemini": "F"},
}
CUTS = ("stream-cut", "reset-body")
CASES = [
    (kind, stream, behaviour, expected if isinstance(expected, str) else expected[kind])
    for kind in ("openai", "anthropic", "gemini")
    for stream, table in ((False, NON_STREAM), (True, STREAM))
    for behaviour, expected in table.items()
]


@pytest.mark.parametrize(
    ("kind", "stream", "behaviour", "expected"),
    CASES,
    ids=[f"{k}-{'stream' if s else 'json'}-{b}" for k, s, b, _ in CASES],
)
async def test_what_the_client_sees(
    aiohttp_client: ClientFactory,
    primary: TestServer,
    backup: TestServer,
    kind: str,
    stream: bool,
    behaviour: str,
    expected: str,
) -> None:
    state(primary).settings.fail = behaviour
    # A cut after bytes went out: hold the cut until gearshift has answered (its head goes out
    # with the first content it read), or the bytes and the cut land together and gearshift,
    # having nothing yet, rightly falls back, which is not the case under test.
    gate = asyncio.Event() if expected == "E" and behaviour in CUTS else None
    state(primary).cut_gate = gate
    client = await aiohttp_client(create_app(two_providers(primary, backup, kind)))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": MESSAGES, "stream": stream},
        headers=HEADERS,
    )
    if gate is not None:
        gate.set()
    tried = resp.headers.get("x-gearshift-attempt-log", "")
    if expected == "P":
        assert resp.status == 400
        body = await resp.json()
        assert body["error"]["type"] == "invalid_request_error"
        assert resp.headers["x-gearshift-attempts"] == "1"
        assert state(backup).requests == []  # the request's own fault: no fallback
        return
    assert resp.status == 200, await resp.text()
    if expected == "F":
        assert resp.headers["x-gearshift-model"] == "spare"
        assert resp.headers["x-gearshift-attempts"] == "2", tried
        assert tried.startswith("cheap@primary:")
        assert tried.endswith("spare@backup:ok")
        if stream:
            events = await sse_events(resp)
            assert events[-1] == "[DONE]"
            assert not any(isinstance(e, dict) and "error" in e for e in events)
            assert content_of(events).startswith("Mock answer from spare-up")
        else:
            body = await resp.json()
            assert body["choices"][0]["message"]["content"].startswith("Mock answer from spare-up")
        return
    # E: bytes from the primary went out; the stream must end with an explicit error.
    assert stream
    assert resp.headers["x-gearshift-model"] == "cheap"
    events = await sse_events(resp)
    assert "[DONE]" not in events
    assert isinstance(events[-1], dict)
    assert set(events[-1]) == {"error"}, events[-1]
    assert events[-1]["error"]["message"]
    assert state(backup).requests == []
