"""Sticky routing end to end: gearshift on loopback in front of two mock upstreams.

``alpha`` (on ``primary``) and ``beta`` (on ``backup``) are light models of equal price, so
the planner always puts ``alpha`` first. Turn 1 of a conversation is served by ``beta``
because ``primary`` fails it; from turn 2 on ``primary`` is healthy again, and only
stickiness keeps the conversation on ``beta`` (without it every later turn goes to
``alpha``, which the off-switch test shows). ``gamma`` is the frontier model.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from upstreams import ClientFactory, config_of, state

from gearshift.serve.app import create_app

TOML = """
use_default_catalog = false
{extra}
[[providers]]
name = "primary"
kind = "openai"
base_url = "{primary}"
api_key = "env:PRIMARY_KEY"

[[providers]]
name = "backup"
kind = "openai"
base_url = "{backup}"
api_key = "env:BACKUP_KEY"

[[models]]
name = "alpha"
provider = "primary"
tier = "light"
price_in = 1
price_out = 1

[[models]]
name = "beta"
provider = "backup"
tier = "light"
price_in = 1
price_out = 1

[[models]]
name = "gamma"
provider = "backup"
tier = "frontier"
price_in = 5
price_out = 5
"""
LIGHT = {"x-gearshift-tier": "light"}
FRONTIER = {"x-gearshift-tier": "frontier"}


async def _gateway(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer, extra: str = ""
) -> TestClient:
    toml = TOML.format(extra=extra, primary=primary.make_url("/v1"), backup=backup.make_url("/v1"))
    config = config_of(toml, PRIMARY_KEY="sk-primary-0123456789", BACKUP_KEY="sk-backup-0123")
    return await aiohttp_client(create_app(config))


def _conversation(turns: int, **extra: Any) -> dict[str, Any]:
    """The body of turn ``turns`` (1-based) of one conversation: its history grows."""
    messages: list[dict[str, str]] = [{"role": "system", "content": "You answer briefly."}]
    for i in range(turns):
        if i:
            messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": f"question {i + 1}"})
    return {"model": "auto", "messages": messages, **extra}


async def _ask(
    client: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[str, str]:
    """The model that answered, and the decision's reason."""
    resp = await client.post("/v1/chat/completions", json=body, headers=headers or LIGHT)
    assert resp.status == 200, await resp.text()
    if body.get("stream"):
        await resp.read()
    return resp.headers["x-gearshift-model"], resp.headers["x-gearshift-reason"]


async def _first_turn_on_beta(
    client: TestClient, primary: TestServer, body: dict[str, Any], **kw: Any
) -> None:
    """Turn 1 while ``primary`` fails: ``beta`` serves it; then ``primary`` recovers."""
    state(primary).settings.fail = "http-503"
    assert (await _ask(client, body, **kw))[0] == "beta"
    state(primary).settings.fail = None


async def _sticky_counts(client: TestClient) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    found = re.findall(r'^gearshift_sticky_total\{result="(\w+)"\} (\S+)$', text, re.M)
    return {result: float(value) for result, value in found}


async def test_a_users_turns_stay_on_the_model_that_served_the_first(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await _gateway(aiohttp_client, primary, backup)
    await _first_turn_on_beta(client, primary, _conversation(1, user="u-1"))
    model, reason = await _ask(client, _conversation(2, user="u-1"))
    assert model == "beta"
    assert reason.endswith(",sticky")
    assert (await _ask(client, _conversation(3, user="u-1", stream=True)))[0] == "beta"
    # Another user, same questions: the usual order.
    assert (await _ask(client, _conversation(2, user="u-2")))[0] == "alpha"
    assert state(primary).requests[-1].body["user"] == "u-2"
    counts = await _sticky_counts(client)
    assert counts == {"hit": 2, "new": 2}  # a result never seen has no sample


async def test_turns_without_any_key_stick_by_their_opening(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await _gateway(aiohttp_client, primary, backup)
    await _first_turn_on_beta(client, primary, _conversation(1))
    for turn in (2, 3, 4):
        assert (await _ask(client, _conversation(turn)))[0] == "beta"
    other = _conversation(2)
    other["messages"][1]["content"] = "a different first question"
    assert (await _ask(client, other))[0] == "alpha"
    # The same first question again, alone: a new conversation, routed as usual.
    assert (await _ask(client, _conversation(1)))[0] == "alpha"


async def test_a_harder_turn_moves_the_session_up_and_later_turns_stay_there(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await _gateway(aiohttp_client, primary, backup)
    body = _conversation(1, prompt_cache_key="conv-7")
    assert (await _ask(client, body))[0] == "alpha"
    assert (await _ask(client, _conversation(2, prompt_cache_key="conv-7")))[0] == "alpha"
    model, reason = await _ask(client, _conversation(3, prompt_cache_key="conv-7"), FRONTIER)
    assert model == "gamma"
    assert "sticky" not in reason
    for turn in (4, 5):
        model, reason = await _ask(client, _conversation(turn, prompt_cache_key="conv-7"))
        assert (model, reason) == ("gamma", "hint,sticky")
    counts = await _sticky_counts(client)
    assert counts == {"hit": 3, "moved": 1, "new": 1}


async def test_the_session_header_joins_requests_into_one_session(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await _gateway(aiohttp_client, primary, backup)
    session = {**LIGHT, "x-gearshift-session": "agent-run-42"}
    await _first_turn_on_beta(client, primary, _conversation(1, user="a"), headers=session)
    unrelated = {"model": "auto", "messages": [{"role": "user", "content": "something else"}]}
    assert (await _ask(client, unrelated, session))[0] == "beta"
    assert (await _ask(client, {**unrelated, "user": "b"}, session))[0] == "beta"
    assert (await _ask(client, unrelated))[0] == "alpha"  # without the header


async def test_a_fallback_that_served_becomes_the_sessions_model(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await _gateway(aiohttp_client, primary, backup)
    await _first_turn_on_beta(client, primary, _conversation(1, user="u"))
    state(backup).settings.fail = "http-503"  # beta fails turn 2: alpha answers it
    assert (await _ask(client, _conversation(2, user="u")))[0] == "alpha"
    state(backup).settings.fail = None
    assert (await _ask(client, _conversation(3, user="u")))[0] == "alpha"
    counts = await _sticky_counts(client)
    assert counts == {"hit": 1, "miss": 1, "new": 1}


async def test_a_pinned_turn_neither_reads_nor_writes_the_session(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await _gateway(aiohttp_client, primary, backup)
    await _first_turn_on_beta(client, primary, _conversation(1, user="u"))
    pinned = {**LIGHT, "x-gearshift-route": "pin"}
    body = {**_conversation(2, user="u"), "model": "alpha"}
    assert (await _ask(client, body, pinned))[0] == "alpha"
    assert (await _ask(client, _conversation(3, user="u")))[0] == "beta"


async def test_stickiness_can_be_turned_off(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    off = "[routing.sticky]\nenabled = false\n"
    client = await _gateway(aiohttp_client, primary, backup, extra=off)
    await _first_turn_on_beta(client, primary, _conversation(1, user="u-1"))
    model, reason = await _ask(client, _conversation(2, user="u-1"))
    assert (model, reason) == ("alpha", "hint")
    assert (await _ask(client, _conversation(3)))[0] == "alpha"
    assert await _sticky_counts(client) == {}
