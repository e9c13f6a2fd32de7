"""A model the provider says does not exist (withdrawn, or not on this account): when
gearshift chose it, the client gets the next model's answer and the deployment leaves the
rotation for a long cool-down; a model the client pinned gets the provider's 404.

Every wire format's 404 (OpenAI ``model_not_found``, Anthropic ``not_found_error``, Gemini
``NOT_FOUND``), stream and not, is in ``test_fault_injection`` ("withdrawn"); here what
happens next, on the OpenAI and Gemini formats.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import FakeClock
from upstreams import HEADERS, MESSAGES, sse_events, state, two_providers

from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]


async def _ask(client: TestClient, stream: bool = False, **extra: Any) -> Any:
    body = {"model": "auto", "messages": MESSAGES, "stream": stream, **extra.pop("body", {})}
    return await client.post("/v1/chat/completions", json=body, headers={**HEADERS, **extra})


@pytest.mark.parametrize("kind", ["openai", "gemini"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_a_withdrawn_model_leaves_the_rotation_and_nobody_sees_it(
    aiohttp_client: ClientFactory,
    primary: TestServer,
    backup: TestServer,
    caplog: pytest.LogCaptureFixture,
    kind: str,
    stream: bool,
) -> None:
    caplog.set_level(logging.INFO)
    state(primary).settings.fail = "withdrawn"
    client = await aiohttp_client(create_app(two_providers(primary, backup, kind)))
    logs = []
    for _ in range(3):
        resp = await _ask(client, stream)
        assert resp.status == 200, await resp.text()
        assert resp.headers["x-gearshift-model"] == "spare"
        if stream:
            assert (await sse_events(resp))[-1] == "[DONE]"
        logs.append(resp.headers["x-gearshift-attempt-log"])
    # Called once: then skipped, and the attempt log says why.
    assert len(state(primary).requests) == 1
    assert logs == [
        "cheap@primary:withdrawn/404, spare@backup:ok",  # called: the provider's 404
        "cheap@primary:withdrawn, spare@backup:ok",  # skipped
        "cheap@primary:withdrawn, spare@backup:ok",
    ]
    loud = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(loud) == 1, "one line, not one per request"
    assert "'cheap'" in loud[0].getMessage()
    assert "[[models]] name = 'cheap'" in loud[0].getMessage()
    stats = await (await client.get("/gearshift/stats")).json()
    assert stats["breakers"]["primary/cheap"] == "withdrawn"
    metrics = await (await client.get("/metrics")).text()
    assert 'gearshift_breaker_state{model="cheap",provider="primary"} 3.0' in metrics


async def test_a_pinned_withdrawn_model_gets_the_providers_404(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    state(primary).settings.fail = "withdrawn"
    client = await aiohttp_client(create_app(two_providers(primary, backup, "openai")))
    for _ in range(2):  # and it stays the client's answer: no breaker in the way
        resp = await _ask(client, body={"model": "cheap"}, **{"x-gearshift-route": "pin"})
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["code"] == "model_not_found"
        assert resp.headers["x-gearshift-attempt-log"] == "cheap@primary:rejected/404"
    assert state(backup).requests == []
    assert len(state(primary).requests) == 2


async def test_when_every_model_is_withdrawn_the_client_gets_a_503_that_says_so(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    state(primary).settings.fail = state(backup).settings.fail = "withdrawn"
    client = await aiohttp_client(create_app(two_providers(primary, backup, "anthropic")))
    for log in (
        "cheap@primary:withdrawn/404, spare@backup:withdrawn/404",  # both called, both gone
        "cheap@primary:withdrawn, spare@backup:withdrawn",  # both skipped
    ):
        resp = await _ask(client)
        assert resp.status == 503
        error = (await resp.json())["error"]
        assert error["code"] == "model_unavailable"
        assert "cheap@primary" in error["message"]
        assert "catalog" in error["message"]
        assert resp.headers["x-gearshift-attempt-log"] == log
    assert len(state(primary).requests) == len(state(backup).requests) == 1


async def test_a_withdrawn_deployment_is_probed_again_after_its_cool_down(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    clock = FakeClock()
    config = two_providers(primary, backup, "openai", "[reliability]\nwithdrawn_cooldown = 60")
    client = await aiohttp_client(create_app(config, clock=clock))
    state(primary).settings.fail = "withdrawn"
    await _ask(client)
    state(primary).settings.fail = None  # the model is back (the key was given access, say)
    clock.advance(59.0)
    resp = await _ask(client)
    assert resp.headers["x-gearshift-attempt-log"] == "cheap@primary:withdrawn, spare@backup:ok"
    clock.advance(1.0)
    resp = await _ask(client)
    assert resp.headers["x-gearshift-model"] == "cheap"  # the probe succeeded: back in
    assert len(state(primary).requests) == 2
