"""The response cache through the real app and the mock upstream: a repeated request answered
from the cache, whole and as the same stream; skip and refresh; temperatures; scoping per
proxy key; expiry on the injected clock; limits checked before a hit; Redis shared by two
gateways."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from conftest import FakeClock, MakeConfig
from redis_server import RedisServer

from gearshift.mock import MOCK_STATE
from gearshift.serve.app import CACHE, create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
KEYS = {"TEAM_A": "sk-team-a-0123456789", "TEAM_B": "sk-team-b-0123456789"}
BODY = {
    "model": "auto",
    "messages": [{"role": "user", "content": "Classify the sentiment: 'Great battery.'"}],
    "temperature": 0,
}
KEYS_TOML = (
    '[[keys]]\nname = "team-a"\nkey = "env:TEAM_A"\nrpm = 3\n'
    '[[keys]]\nname = "team-b"\nkey = "env:TEAM_B"\n'
)


async def gateway(
    aiohttp_client: ClientFactory,
    make_config: MakeConfig,
    toml: str = "",
    cache: str = "",
    **app: Any,
) -> TestClient:
    config = make_config("[cache]\nenabled = true\nttl = 60\n" + cache + toml, environ=KEYS)
    return await aiohttp_client(create_app(config, **app))


async def ask(client: TestClient, key: str = "TEAM_A", **extra: Any) -> Any:
    headers = {"authorization": f"Bearer {KEYS[key]}", **extra.pop("headers", {})}
    return await client.post("/v1/chat/completions", json={**BODY, **extra}, headers=headers)


def upstream_calls(mock: TestServer) -> int:
    return len(mock.app[MOCK_STATE].requests)


async def stored(client: TestClient) -> None:
    await client.app[CACHE].drain()


async def test_a_repeated_request_is_answered_from_the_cache_at_no_cost(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_upstream: TestServer
) -> None:
    client = await gateway(aiohttp_client, make_config, KEYS_TOML)
    first = await ask(client)
    assert first.headers["x-gearshift-cache"] == "miss"
    body = await first.read()
    await stored(client)
    second = await ask(client)
    assert second.status == 200
    assert second.headers["x-gearshift-cache"] == "hit"
    assert await second.read() == body
    assert float(second.headers["x-gearshift-cost-usd"]) == 0
    assert float(second.headers["x-gearshift-savings-usd"]) > 0
    assert second.headers["x-gearshift-model"] == first.headers["x-gearshift-model"]
    assert upstream_calls(mock_upstream) == 1


async def test_a_stream_is_replayed_as_the_same_stream(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_upstream: TestServer
) -> None:
    client = await gateway(aiohttp_client, make_config, KEYS_TOML)
    first = await ask(client, stream=True)
    streamed = await first.read()
    assert streamed.rstrip().endswith(b"data: [DONE]")
    await stored(client)
    replay = await ask(client, stream=True)
    assert replay.headers["x-gearshift-cache"] == "hit"
    assert replay.headers["content-type"].startswith("text/event-stream")
    assert await replay.read() == streamed
    # A whole request is another entry: not served from the stream's.
    whole = await ask(client)
    assert whole.headers["x-gearshift-cache"] == "miss"
    assert upstream_calls(mock_upstream) == 2


async def test_skip_refresh_and_temperatures(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_upstream: TestServer
) -> None:
    client = await gateway(aiohttp_client, make_config, KEYS_TOML)
    await ask(client, "TEAM_B")
    await stored(client)
    skipped = await ask(client, "TEAM_B", headers={"x-gearshift-cache": "skip"})
    assert "x-gearshift-cache" not in skipped.headers
    refreshed = await ask(client, "TEAM_B", headers={"x-gearshift-cache": "refresh"})
    assert refreshed.headers["x-gearshift-cache"] == "refresh"
    assert upstream_calls(mock_upstream) == 3
    await stored(client)
    assert (await ask(client, "TEAM_B")).headers["x-gearshift-cache"] == "hit"
    # Sampled answers are meant to differ: not cached (absent: the provider's default, 1).
    warm = await ask(client, "TEAM_B", temperature=0.7)
    assert "x-gearshift-cache" not in warm.headers
    unset = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": BODY["messages"]},
        headers={"authorization": f"Bearer {KEYS['TEAM_B']}"},
    )
    assert "x-gearshift-cache" not in unset.headers


async def test_any_temperature_caches_sampled_answers_too(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway(aiohttp_client, make_config, cache="any_temperature = true\n")
    await client.post("/v1/chat/completions", json={**BODY, "temperature": 0.9})
    await stored(client)
    again = await client.post("/v1/chat/completions", json={**BODY, "temperature": 0.9})
    assert again.headers["x-gearshift-cache"] == "hit"


async def test_entries_belong_to_their_key_unless_shared(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway(aiohttp_client, make_config, KEYS_TOML)
    await ask(client, "TEAM_A")
    await stored(client)
    assert (await ask(client, "TEAM_B")).headers["x-gearshift-cache"] == "miss"
    shared = await gateway(aiohttp_client, make_config, KEYS_TOML, cache="shared = true\n")
    await ask(shared, "TEAM_A")
    await stored(shared)
    assert (await ask(shared, "TEAM_B")).headers["x-gearshift-cache"] == "hit"


async def test_entries_expire_after_their_ttl(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    clock = FakeClock()
    client = await gateway(aiohttp_client, make_config, KEYS_TOML, clock=clock)
    await ask(client)
    await stored(client)
    clock.advance(59)
    assert (await ask(client, "TEAM_A")).headers["x-gearshift-cache"] == "hit"
    clock.advance(2)
    assert (await ask(client, "TEAM_B")).headers["x-gearshift-cache"] == "miss"


async def test_rate_limits_are_checked_before_a_hit_is_served(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    client = await gateway(aiohttp_client, make_config, KEYS_TOML)  # team-a: 3 per minute
    statuses = []
    for _ in range(4):
        resp = await ask(client)
        statuses.append((resp.status, resp.headers.get("x-gearshift-cache")))
        await stored(client)
    assert statuses == [(200, "miss"), (200, "hit"), (200, "hit"), (429, None)]


async def test_two_gateways_on_one_redis_share_the_cache(
    aiohttp_client: ClientFactory,
    make_config: MakeConfig,
    mock_upstream: TestServer,
    redis_server: RedisServer,
) -> None:
    prefix = f"cache{time.monotonic_ns()}:"
    state = f'[state]\nbackend = "redis"\nurl = "{redis_server.url}"\nprefix = "{prefix}"\n'
    one = await gateway(aiohttp_client, make_config, KEYS_TOML + state)
    two = await gateway(aiohttp_client, make_config, KEYS_TOML + state)
    first = await ask(one, "TEAM_B", stream=True)
    streamed = await first.read()
    await stored(one)
    replay = await ask(two, "TEAM_B", stream=True)
    assert replay.headers["x-gearshift-cache"] == "hit"
    assert await replay.read() == streamed
    assert upstream_calls(mock_upstream) == 1


async def test_the_messages_api_is_cached_in_its_own_format_whole_and_streamed(
    aiohttp_client: ClientFactory, make_config: MakeConfig, mock_upstream: TestServer
) -> None:
    import anthropic

    client = await gateway(aiohttp_client, make_config, KEYS_TOML)
    ask_messages = {
        "model": "auto",
        "max_tokens": 200,
        # (this SDK's create() has no temperature parameter; the API still takes it)
        "extra_body": {"temperature": 0},
        "messages": [{"role": "user", "content": "Classify the sentiment: 'Great battery.'"}],
    }
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")), api_key=KEYS["TEAM_B"], max_retries=0
    ) as sdk:
        first = await sdk.messages.with_raw_response.create(**ask_messages)
        assert first.headers["x-gearshift-cache"] == "miss"
        await stored(client)
        second = await sdk.messages.with_raw_response.create(**ask_messages)
        assert second.headers["x-gearshift-cache"] == "hit"
        assert float(second.headers["x-gearshift-cost-usd"]) == 0
        message = await second.parse()  # the SDK reads the replay as a message
        assert message.type == "message"
        assert message.content[0].text == (await first.parse()).content[0].text

        async with sdk.messages.stream(**ask_messages) as stream:
            text = await stream.get_final_text()
        await stored(client)
        async with sdk.messages.stream(**ask_messages) as replay:
            assert replay.response.headers["x-gearshift-cache"] == "hit"
            assert await replay.get_final_text() == text
            final = await replay.get_final_message()
        assert final.stop_reason == "end_turn"
    assert upstream_calls(mock_upstream) == 2  # one whole, one streamed
    # A chat client asking the same is another entry (its answer is in another format).
    chat = await ask(client, "TEAM_B")
    assert chat.headers["x-gearshift-cache"] == "miss"
    assert upstream_calls(mock_upstream) == 3
