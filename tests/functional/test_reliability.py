"""Fallbacks, breakers, retries and deadlines through the real app and real mock upstreams.

Breakers and back-off run on a ``FakeClock`` (sleeps are recorded, not slept); deadlines run
on real time, with budgets of a few hundred milliseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import FakeClock
from upstreams import HEADERS, MESSAGES, config_of, sse_events, state, two_providers

from gearshift.serve.app import ROUTER, create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
KEYS = {"PRIMARY_KEY": "sk-primary-0123456789", "BACKUP_KEY": "sk-backup-0123456789"}


def provider(name: str, server: TestServer, timeouts: str = "") -> str:
    out = (
        f'[[providers]]\nname = "{name}"\nkind = "openai"\n'
        f'base_url = "{server.make_url("/v1")}"\napi_key = "env:PRIMARY_KEY"\n'
    )
    return out + (f"timeouts = {{ {timeouts} }}\n" if timeouts else "")


def model(name: str, on: str, tier: str = "light", price: float = 1.0) -> str:
    return (
        f'[[models]]\nname = "{name}"\nprovider = "{on}"\nupstream_id = "{name}-up"\n'
        f'tier = "{tier}"\nprice_in = {price}\nprice_out = {price}\n'
    )


def catalog(*parts: str, reliability: str = "") -> Any:
    head = "use_default_catalog = false\n"
    if reliability:
        head += f"[reliability]\n{reliability}\n"
    return config_of(head + "".join(parts), **KEYS)


def upstream_models(server: TestServer) -> list[str]:
    return [r.body.get("model", "") for r in state(server).requests]


async def ask(client: TestClient, stream: bool = False, **headers: str) -> Any:
    return await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": MESSAGES, "stream": stream},
        headers={**HEADERS, **headers},
    )


async def test_an_outage_of_the_primary_under_500_concurrent_requests_loses_none(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    clock = FakeClock()
    app = create_app(two_providers(primary, backup, "openai"), clock=clock)
    client = await aiohttp_client(app)
    breakers = app[ROUTER].breakers
    state(primary).settings.fail = "http-503"

    async def one(i: int) -> bool:
        stream = i % 2 == 0
        resp = await ask(client, stream)
        if resp.status != 200:
            return False
        if stream:
            events = await sse_events(resp)
            return events[-1] == "[DONE]" and not any("error" in e for e in events[:-1])
        body = await resp.json()
        return bool(body["choices"][0]["message"]["content"])

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert results.count(False) == 0
    assert breakers.states()["primary/cheap"] == "open"
    # Once open, the primary gets nothing: the next requests go straight to the backup.
    seen = len(state(primary).requests)
    resp = await ask(client)
    assert resp.status == 200
    assert resp.headers["x-gearshift-attempt-log"] == "cheap@primary:open, spare@backup:ok"
    assert resp.headers["x-gearshift-attempts"] == "1"
    assert len(state(primary).requests) == seen

    # The provider comes back; after the cool-down one probe goes through and closes it.
    state(primary).settings.fail = None
    clock.advance(30.0)
    resp = await ask(client, stream=True)
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "cheap"
    assert (await sse_events(resp))[-1] == "[DONE]"
    assert breakers.states()["primary/cheap"] == "closed"
    assert len(state(primary).requests) == seen + 1


async def test_a_probe_that_fails_opens_the_breaker_again(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    clock = FakeClock()
    extra = "[reliability]\nbreaker = { failures = 1, cooldown = 10 }"
    app = create_app(two_providers(primary, backup, "openai", extra), clock=clock)
    client = await aiohttp_client(app)
    state(primary).settings.fail = "http-500"
    assert (await ask(client)).status == 200
    assert app[ROUTER].breakers.states()["primary/cheap"] == "open"
    clock.advance(10.0)
    resp = await ask(client)  # the probe fails: the backup still answers
    log = "cheap@primary:unavailable/500, spare@backup:ok"
    assert resp.headers["x-gearshift-attempt-log"] == log
    assert app[ROUTER].breakers.states()["primary/cheap"] == "open"
    assert len(state(primary).requests) == 2


@pytest.mark.parametrize("stream", [False, True])
async def test_fallbacks_never_drop_below_the_required_tier(
    aiohttp_client: ClientFactory,
    primary: TestServer,
    backup: TestServer,
    mock_upstream: TestServer,
    stream: bool,
) -> None:
    config = catalog(
        provider("a", primary),
        provider("b", backup),
        provider("c", mock_upstream),
        model("f1", "a", "frontier", 2.0),
        model("f2", "b", "frontier", 5.0),
        model("l1", "c", "light", 0.1),  # the cheapest, and healthy
    )
    client = await aiohttp_client(create_app(config))
    state(primary).settings.fail = "http-500"
    resp = await ask(client, stream, **{"x-gearshift-tier": "frontier"})
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "f2"
    await resp.read()

    state(backup).settings.fail = "http-503"  # now every frontier model fails
    resp = await ask(client, stream, **{"x-gearshift-tier": "frontier"})
    assert resp.status == 503  # the most telling upstream error: overloaded
    assert (await resp.json())["error"]["type"] == "server_error"
    assert "x-gearshift-degraded" not in resp.headers
    assert state(mock_upstream).requests == []  # the light model was never asked


async def test_degrading_when_allowed_says_so(
    aiohttp_client: ClientFactory,
    primary: TestServer,
    backup: TestServer,
    mock_upstream: TestServer,
) -> None:
    config = catalog(
        provider("a", primary),
        provider("b", mock_upstream),
        model("f1", "a", "frontier", 2.0),
        model("s1", "b", "standard", 1.0),
        model("l1", "b", "light", 0.1),
        reliability="degrade = true",
    )
    client = await aiohttp_client(create_app(config))
    state(primary).settings.fail = "http-500"
    resp = await ask(client, **{"x-gearshift-tier": "frontier"})
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "s1"  # the best of the lower tiers first
    assert resp.headers["x-gearshift-degraded"] == "frontier->standard"
    assert resp.headers["x-gearshift-tier"] == "frontier"
    assert upstream_models(primary) == ["f1-up"]  # one round at the tier, then lower tiers


async def rate_limited_only_model(
    aiohttp_client: ClientFactory, primary: TestServer, retry_after: float
) -> tuple[TestClient, FakeClock]:
    """One model, answering 429 with ``retry_after``; breakers and back-off on a fake clock."""
    clock = FakeClock()
    config = catalog(provider("a", primary), model("m", "a"))
    client = await aiohttp_client(create_app(config, clock=clock))
    state(primary).settings.fail = "http-429"
    state(primary).settings.retry_after_s = retry_after
    return client, clock


async def test_a_short_retry_after_is_waited_out_on_the_only_model(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    client, clock = await rate_limited_only_model(aiohttp_client, primary, 0.4)

    def recover(_: float) -> None:
        state(primary).settings.fail = None

    clock.on_sleep = recover
    resp = await ask(client)
    assert resp.status == 200
    assert resp.headers["x-gearshift-attempt-log"] == "m@a:rate_limited/429, m@a:ok"
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] >= 0.4 - 1e-9


async def test_a_long_retry_after_is_not_waited_for(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    client, clock = await rate_limited_only_model(aiohttp_client, primary, 30)
    resp = await ask(client)
    assert resp.status == 429
    assert resp.headers["retry-after"] == "30"  # the client learns when to come back
    assert resp.headers["x-gearshift-attempts"] == "1"
    assert clock.sleeps == []


async def test_with_a_fallback_a_retry_after_is_not_waited_for(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    clock = FakeClock()
    client = await aiohttp_client(create_app(two_providers(primary, backup, "openai"), clock=clock))
    state(primary).settings.fail = "http-429"
    state(primary).settings.retry_after_s = 0.5
    resp = await ask(client)
    assert resp.headers["x-gearshift-model"] == "spare"
    assert clock.sleeps == []


async def test_retries_back_off_with_full_jitter_within_the_attempt_budget(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    clock = FakeClock()
    config = catalog(
        provider("a", primary),
        model("m", "a"),
        reliability="max_attempts = 4\nbackoff_base = 0.1\nbackoff_max = 0.25\n"
        "breaker = { failures = 100 }",
    )
    client = await aiohttp_client(create_app(config, clock=clock, rng=random.Random(7)))
    state(primary).settings.fail = "http-500"
    resp = await ask(client)
    assert resp.status == 502
    assert resp.headers["x-gearshift-attempts"] == "4"
    assert len(state(primary).requests) == 4
    assert len(clock.sleeps) == 3
    for n, wait in enumerate(clock.sleeps):
        assert 0 <= wait <= min(0.25, 0.1 * 2**n)
    assert len(set(clock.sleeps)) == 3  # jittered, not a fixed schedule


async def test_the_attempt_budget_spans_every_model(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    config = catalog(
        provider("a", primary),
        *(model(f"m{i}", "a", price=i + 1) for i in range(4)),
        reliability="max_attempts = 2",
    )
    client = await aiohttp_client(create_app(config, clock=FakeClock()))
    state(primary).settings.fail = "http-500"
    resp = await ask(client)
    assert resp.status == 502
    assert upstream_models(primary) == ["m0-up", "m1-up"]


async def test_when_every_breaker_is_open_the_answer_is_503_circuit_open(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    clock = FakeClock()
    config = catalog(
        provider("a", primary),
        model("m", "a"),
        reliability="max_attempts = 1\nbreaker = { failures = 1, cooldown = 20 }",
    )
    client = await aiohttp_client(create_app(config, clock=clock))
    state(primary).settings.fail = "http-500"
    assert (await ask(client)).status == 502
    clock.advance(5.0)
    resp = await ask(client)
    assert resp.status == 503
    body = await resp.json()
    assert body["error"]["code"] == "circuit_open"
    assert resp.headers["retry-after"] == "15"
    assert resp.headers["x-gearshift-attempt-log"] == "m@a:open"
    assert len(state(primary).requests) == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_the_request_deadline_bounds_everything(
    aiohttp_client: ClientFactory, primary: TestServer, stream: bool
) -> None:
    config = catalog(
        provider("a", primary, "first_byte = 30, idle = 30, total = 30"),
        model("m", "a"),
        reliability="deadline = 0.3",
    )
    client = await aiohttp_client(create_app(config))
    state(primary).settings.fail = "hang"
    started = time.monotonic()
    resp = await ask(client, stream)
    elapsed = time.monotonic() - started
    assert resp.status == 504
    body = await resp.json()
    assert body["error"]["code"] == "deadline_exceeded"
    assert 0.25 <= elapsed < 2.0


async def test_a_client_may_ask_for_a_shorter_deadline(
    aiohttp_client: ClientFactory, primary: TestServer
) -> None:
    config = catalog(provider("a", primary), model("m", "a"))
    client = await aiohttp_client(create_app(config))
    state(primary).settings.chunk_delay_ms = 100  # a slow stream: 13 events, 1.2 s
    started = time.monotonic()
    resp = await ask(client, True, **{"x-gearshift-timeout": "0.35"})
    assert resp.status == 200
    events = await sse_events(resp)
    assert time.monotonic() - started < 1.0
    assert "[DONE]" not in events
    assert events[-1]["error"]["type"] == "timeout_error"  # explicit, never a clean end

    for bad in ("0", "-1", "soon", "inf", "nan"):
        resp = await ask(client, **{"x-gearshift-timeout": bad})
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == "x-gearshift-timeout"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_leaving_is_not_a_provider_failure(
    aiohttp_client: ClientFactory, primary: TestServer, stream: bool
) -> None:
    config = catalog(
        provider("a", primary), model("m", "a"), reliability="breaker = { failures = 1 }"
    )
    app = create_app(config, clock=FakeClock())
    client = await aiohttp_client(app)
    state(primary).settings.fail = "stall"  # starts answering, then never finishes
    request = asyncio.ensure_future(ask(client, stream))
    async with asyncio.timeout(5):
        await state(primary).wait_for_requests(1)
    if stream:
        resp = await request
        assert (await resp.content.readany()).startswith(b"data: ")
        resp.close()
    else:
        request.cancel()
    async with asyncio.timeout(5):
        await state(primary).wait_for_disconnects(1)  # the upstream call was cancelled
    assert app[ROUTER].breakers.states() == {"a/m": "closed"}


async def test_waiting_attempts_move_on_when_their_breaker_opens(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    """A non-streaming call to a hung upstream would wait `total` (30 s here); once other
    requests' failures open the breaker, it is abandoned and the backup answers."""
    config = catalog(
        provider("a", primary, "first_byte = 0.2, idle = 30, total = 30"),
        provider("b", backup),
        model("cheap", "a", price=0.1),
        model("spare", "b", price=1.0),
        reliability="breaker = { failures = 2 }",
    )
    client = await aiohttp_client(create_app(config))
    state(primary).settings.fail = "hang"
    started = time.monotonic()
    waiting = asyncio.ensure_future(ask(client))  # non-streaming: bounded by `total` only
    async with asyncio.timeout(5):
        await state(primary).wait_for_requests(1)
    for _ in range(2):  # two streams time out at first_byte: the breaker opens
        resp = await ask(client, stream=True)
        assert resp.headers["x-gearshift-model"] == "spare"
        await resp.read()
    resp = await waiting
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "spare"
    assert resp.headers["x-gearshift-attempt-log"] == "cheap@a:abandoned, spare@b:ok"
    assert time.monotonic() - started < 5


async def test_a_non_streaming_probe_to_a_hung_upstream_gives_up_at_first_byte(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    """Half-open, the probe is the only request sent there: it must not hold its client for
    the whole `total` (30 s here) — `first_byte` bounds it, and the backup answers."""
    clock = FakeClock()
    config = catalog(
        provider("a", primary, "first_byte = 0.2, idle = 30, total = 30"),
        provider("b", backup),
        model("cheap", "a", price=0.1),
        model("spare", "b", price=1.0),
        reliability="breaker = { failures = 1, cooldown = 10 }",
    )
    app = create_app(config, clock=clock)
    client = await aiohttp_client(app)
    state(primary).settings.fail = "http-500"
    assert (await ask(client)).headers["x-gearshift-model"] == "spare"  # opens the breaker
    state(primary).settings.fail = "hang"
    clock.advance(10.0)
    started = time.monotonic()
    resp = await ask(client)
    assert resp.status == 200
    assert resp.headers["x-gearshift-attempt-log"] == "cheap@a:timeout, spare@b:ok"
    assert time.monotonic() - started < 3
    assert app[ROUTER].breakers.states() == {"a/cheap": "open", "b/spare": "closed"}
