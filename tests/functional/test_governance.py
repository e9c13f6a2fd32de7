"""Proxy keys with a policy, through the real app and the mock upstream: rate limits and their
headers, budgets refused or capped, allowed tiers and models, a default tier; the official
SDKs see the 429s in their own shapes; in-process state, and Redis shared by two gateways."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anthropic
import openai
import pytest
from aiohttp.test_utils import TestClient
from conftest import MakeConfig
from redis_server import RedisServer

from gearshift.mock import MockState
from gearshift.serve.app import SPEND, create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
KEYS = {"TEAM_A": "sk-team-a-0123456789", "TEAM_B": "sk-team-b-0123456789"}
EASY = [{"role": "user", "content": "Classify the sentiment: 'Great battery.'"}]
HARD = [
    {
        "role": "user",
        "content": "Prove that there are infinitely many primes of the form 4k+3, then derive "
        "a rigorous bound on the density of such primes and explain every step.",
    }
]


def keys_toml(extra_a: str = "", state: str = "", extra_b: str = "") -> str:
    return (
        '[[keys]]\nname = "team-a"\nkey = "env:TEAM_A"\n' + extra_a + "\n"
        '[[keys]]\nname = "team-b"\nkey = "env:TEAM_B"\n' + extra_b + "\n" + state
    )


async def gateway_for(
    aiohttp_client: ClientFactory, make_config: MakeConfig, toml: str
) -> TestClient:
    return await aiohttp_client(create_app(make_config(toml, environ=KEYS)))


async def ask(
    client: TestClient, key: str = KEYS["TEAM_A"], messages: Any = EASY, **extra: Any
) -> Any:
    return await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": messages, **extra},
        headers={"authorization": f"Bearer {key}"},
    )


async def settled(client: TestClient, n: int) -> None:
    """Wait until ``n`` answered requests are settled into their keys' budgets."""
    async with asyncio.timeout(5):
        await client.app[SPEND].wait_settled(n)


async def test_a_rate_limited_key_gets_429_with_openais_headers_and_others_are_untouched(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway_for(aiohttp_client, make_config, keys_toml("rpm = 2"))
    first = await ask(client)
    assert first.status == 200
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert (await ask(client)).status == 200
    refused = await ask(client)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"
    assert "team-a" in body["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 30
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert "x-request-id" in refused.headers
    # Another key has its own limits (none here).
    for _ in range(3):
        other = await ask(client, KEYS["TEAM_B"])
        assert other.status == 200
        assert "x-ratelimit-limit-requests" not in other.headers


async def test_the_sdks_read_the_429_in_their_own_shapes(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway_for(aiohttp_client, make_config, keys_toml("rpm = 1"))
    base = str(client.make_url("/"))
    async with openai.AsyncOpenAI(
        base_url=base + "v1", api_key=KEYS["TEAM_A"], max_retries=0
    ) as oai:
        await oai.chat.completions.create(model="auto", messages=EASY)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as raised:
            await oai.chat.completions.create(model="auto", messages=EASY)  # type: ignore[arg-type]
    assert raised.value.code == "rate_limit_exceeded"
    assert raised.value.response.headers["x-ratelimit-limit-requests"] == "1"
    async with anthropic.AsyncAnthropic(
        base_url=base, api_key=KEYS["TEAM_A"], max_retries=0
    ) as ant:
        with pytest.raises(anthropic.RateLimitError) as refused:
            await ant.messages.create(model="auto", max_tokens=64, messages=EASY)  # type: ignore[arg-type]
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


async def test_a_spent_budget_is_a_429_in_each_api_s_own_shape(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway_for(
        aiohttp_client, make_config, keys_toml("budget_daily_usd = 0.0000001")
    )
    assert (await ask(client)).status == 200
    await settled(client, 1)
    base = str(client.make_url("/"))
    async with openai.AsyncOpenAI(
        base_url=base + "v1", api_key=KEYS["TEAM_A"], max_retries=0
    ) as oai:
        with pytest.raises(openai.RateLimitError) as chat:
            await oai.chat.completions.create(model="auto", messages=EASY)  # type: ignore[arg-type]
        with pytest.raises(openai.RateLimitError) as responses:
            await oai.responses.create(model="auto", input="Classify: 'Great battery.'")
    for raised in (chat, responses):
        assert raised.value.code == "budget_exceeded"
        assert raised.value.type == "insufficient_quota"
        assert 0 < int(raised.value.response.headers["retry-after"]) <= 86_400
    async with anthropic.AsyncAnthropic(
        base_url=base, api_key=KEYS["TEAM_A"], max_retries=0
    ) as ant:
        with pytest.raises(anthropic.RateLimitError) as messages:
            await ant.messages.create(model="auto", max_tokens=64, messages=EASY)  # type: ignore[arg-type]
    assert messages.value.status_code == 429
    assert "spent its budget" in messages.value.body["error"]["message"]  # type: ignore[index]
    assert 0 < int(messages.value.response.headers["retry-after"]) <= 86_400


async def test_requests_in_flight_hold_their_estimate_against_the_budget(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_state: MockState
) -> None:
    probe = await gateway_for(aiohttp_client, make_config, keys_toml())
    estimate = float((await ask(probe, KEYS["TEAM_B"])).headers["x-gearshift-est-cost-usd"])
    client = await gateway_for(
        aiohttp_client, make_config, keys_toml(f"budget_daily_usd = {2.5 * estimate!r}")
    )
    mock_state.settings.latency_ms = 100  # all six are in flight together
    answers = await asyncio.gather(*(ask(client) for _ in range(6)))
    statuses = sorted(a.status for a in answers)
    # Each admitted request held its estimate: the third brought the total to 2 of 2.5
    # estimates, the fourth found it over. (Without the hold all six were admitted.)
    assert statuses == [200, 200, 200, 429, 429, 429]
    await settled(client, 3)
    spent = sum(float(a.headers["x-gearshift-cost-usd"]) for a in answers if a.status == 200)
    stats = await (
        await client.get("/gearshift/stats", headers={"x-api-key": KEYS["TEAM_A"]})
    ).json()
    # Settled: the estimates are replaced by what the answers cost.
    assert stats["keys"]["team-a"]["budget"]["spent_today_usd"] == pytest.approx(spent)
    assert stats["keys"]["team-a"]["refused"] == 3


async def test_a_token_limit_counts_the_request_and_settles_what_the_answer_used(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway_for(aiohttp_client, make_config, keys_toml("tpm = 100000"))
    resp = await ask(client, max_tokens=50)
    assert resp.status == 200
    limit = int(resp.headers["x-ratelimit-limit-tokens"])
    remaining = int(resp.headers["x-ratelimit-remaining-tokens"])
    assert limit == 100_000
    assert 100_000 - 200 < remaining < 100_000  # the prompt and the answer it expects
    # A request larger than a minute's tokens can never fit: said plainly.
    small = await gateway_for(aiohttp_client, make_config, keys_toml("tpm = 1000"))
    huge = await ask(small, messages=[{"role": "user", "content": "word " * 3000}])
    assert huge.status == 429
    assert "more than the proxy key" in (await huge.json())["error"]["message"]


async def test_a_key_over_its_budget_is_refused_until_the_period_resets(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway_for(
        aiohttp_client, make_config, keys_toml("budget_daily_usd = 0.0000001")
    )
    assert (await ask(client)).status == 200  # nothing spent yet
    await settled(client, 1)
    refused = await ask(client)
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "budget_exceeded"
    assert body["error"]["type"] == "insufficient_quota"
    now = time.time()
    midnight = (now // 86_400 + 1) * 86_400
    assert abs(int(refused.headers["retry-after"]) - (midnight - now)) <= 2
    assert (await ask(client, KEYS["TEAM_B"])).status == 200  # team-b has no budget
    metrics = await (await client.get("/metrics")).text()
    assert 'gearshift_key_spend_usd_total{key="team-a"}' in metrics
    assert 'gearshift_key_requests_total{key="team-a",status="429"} 1.0' in metrics


async def test_a_capped_key_over_budget_is_served_on_the_light_tier(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    toml = keys_toml('budget_daily_usd = 0.0000001\nover_budget = "cap"')
    client = await gateway_for(aiohttp_client, make_config, toml)
    before = await ask(client, messages=HARD)
    assert before.headers["x-gearshift-tier"] == "frontier"
    assert "x-gearshift-budget" not in before.headers
    await settled(client, 1)
    capped = await ask(client, messages=HARD)
    assert capped.status == 200
    assert capped.headers["x-gearshift-budget"] == "capped"
    assert capped.headers["x-gearshift-tier"] == "light"
    assert capped.headers["x-gearshift-reason"].endswith("budget-capped")


async def test_allowed_tiers_models_and_a_default_tier(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    toml = keys_toml('tiers = ["light", "standard"]\nmodels = ["gpt-4o-mini"]')
    toml += '\ndefault_tier = "standard"\n'  # team-b's
    client = await gateway_for(aiohttp_client, make_config, toml)
    hard = await ask(client, messages=HARD)
    assert hard.status == 200
    assert hard.headers["x-gearshift-tier"] == "standard"  # the highest it may reach
    assert hard.headers["x-gearshift-reason"].endswith("key-tiers")
    named = await client.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o", "messages": EASY},
        headers={"authorization": f"Bearer {KEYS['TEAM_A']}"},
    )
    assert named.status == 403
    assert (await named.json())["error"]["code"] == "model_not_allowed"
    easy_b = await ask(client, KEYS["TEAM_B"])
    assert easy_b.headers["x-gearshift-tier"] == "standard"  # its default, as a hint
    hinted_b = await ask(client, KEYS["TEAM_B"], gearshift={"tier": "light"})
    assert hinted_b.headers["x-gearshift-tier"] == "light"  # the request's own hint wins


async def test_two_gateways_on_one_redis_share_a_key_s_limit_and_budget(
    aiohttp_client: ClientFactory, make_config: MakeConfig, redis_server: RedisServer
) -> None:
    url, prefix = redis_server.url, f"gw{time.monotonic_ns()}:"
    state = f'[state]\nbackend = "redis"\nurl = "{url}"\nprefix = "{prefix}"\n'
    toml = keys_toml("rpm = 3", state, extra_b="budget_daily_usd = 0.0000001")
    one = await gateway_for(aiohttp_client, make_config, toml)
    two = await gateway_for(aiohttp_client, make_config, toml)
    # team-a: three requests a minute between both gateways.
    assert [(await ask(c)).status for c in (one, two, one, two)] == [200, 200, 200, 429]
    # team-b: what one gateway spent is over the budget for the other too.
    assert (await ask(one, KEYS["TEAM_B"])).status == 200
    await settled(one, 1)
    refused = await ask(two, KEYS["TEAM_B"])
    assert refused.status == 429
    assert (await refused.json())["error"]["code"] == "budget_exceeded"


@pytest.mark.parametrize("policy", ["fail_open", "fail_closed"])
async def test_a_redis_that_is_down_follows_the_configured_policy_without_hanging(
    aiohttp_client: ClientFactory, make_config: MakeConfig, policy: str
) -> None:
    from redis_server import redis_skip_reason

    if redis_skip_reason():
        pytest.skip(str(redis_skip_reason()))
    server = RedisServer()
    server.start()
    state = (
        f'[state]\nbackend = "redis"\nurl = "{server.url}"\ntimeout = 0.1\non_error = "{policy}"\n'
    )
    client = await gateway_for(aiohttp_client, make_config, keys_toml("rpm = 100", state))
    try:
        assert (await ask(client)).status == 200
        server.stop()
        started = time.monotonic()
        resp = await ask(client)
        assert time.monotonic() - started < 2.0
        if policy == "fail_open":
            assert resp.status == 200
            assert "x-ratelimit-limit-requests" not in resp.headers
        else:
            assert resp.status == 503
            assert (await resp.json())["error"]["code"] == "state_unavailable"
        metrics = await (await client.get("/metrics")).text()
        assert 'gearshift_state_errors_total{backend="redis"}' in metrics
    finally:
        server.stop()
