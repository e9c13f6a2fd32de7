"""The shared-state backends behind budgets, rate limits and the cache: the in-process one on
a fake clock, and Redis — a real ``redis-server`` on loopback — through the same tests; then
what only Redis must do: stay exact under racing clients, and fail fast when it is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from conftest import FakeClock
from redis_server import RedisServer, redis_skip_reason

from gearshift.governance.state import Bucket, MemoryState, RedisState, State, StateUnavailable


@pytest.fixture(params=["memory", "redis"])
async def state(request: pytest.FixtureRequest) -> AsyncIterator[State]:
    if request.param == "memory":
        yield MemoryState(FakeClock().now)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    backend = RedisState(server.url, prefix=f"t{time.monotonic_ns()}:", timeout=0.5)
    try:
        yield backend
    finally:
        await backend.close()


async def test_counters_add_up_and_read_back(state: State) -> None:
    assert await state.total("spend:team-a:day") == 0.0
    assert await state.add("spend:team-a:day", 0.25, ttl=86_400) == 0.25
    assert await state.add("spend:team-a:day", 0.5, ttl=86_400) == 0.75
    assert await state.total("spend:team-a:day") == 0.75
    assert await state.total("spend:team-b:day") == 0.0


async def test_a_bucket_gives_its_capacity_then_says_when_more_fits(state: State) -> None:
    # 3 per minute: nearly no refill within the test.
    taken = [await state.take("rpm:a", 1, capacity=3, per_second=3 / 60) for _ in range(4)]
    assert [t.ok for t in taken] == [True, True, True, False]
    assert [t.remaining for t in taken[:3]] == [2, 1, 0]
    assert 0 < taken[3].retry_after <= 20.0 + 1e-6  # one request refills in 20 s
    # A cost larger than what is left takes nothing.
    assert not (await state.take("tpm:a", 500, capacity=400, per_second=400 / 60)).ok
    assert (await state.take("tpm:a", 400, capacity=400, per_second=400 / 60)).ok


async def test_charging_beyond_the_estimate_leaves_the_bucket_in_debt(state: State) -> None:
    assert (await state.take("tpm:b", 100, capacity=1000, per_second=1000 / 60)).ok
    await state.charge("tpm:b", 1500, capacity=1000, per_second=1000 / 60)  # the answer's use
    refused = await state.take("tpm:b", 1, capacity=1000, per_second=1000 / 60)
    assert not refused.ok
    assert refused.remaining == 0
    assert refused.retry_after > 30  # ~600 tokens in debt at 16.7 per second


async def test_cached_values_come_back_until_they_expire(state: State) -> None:
    assert await state.get("cache:x") is None
    await state.put("cache:x", b'{"answer": 1}', ttl=3600)
    assert await state.get("cache:x") == b'{"answer": 1}'
    await state.put("cache:x", b"newer", ttl=3600)
    assert await state.get("cache:x") == b"newer"


async def test_memory_counters_and_cache_expire_on_the_clock() -> None:
    clock = FakeClock()
    state = MemoryState(clock.now)
    await state.add("spend:day", 1.0, ttl=10)
    await state.put("cache:y", b"v", ttl=5)
    clock.advance(5)
    assert await state.get("cache:y") is None
    assert await state.total("spend:day") == 1.0
    clock.advance(5)
    assert await state.total("spend:day") == 0.0
    assert await state.add("spend:day", 2.0, ttl=10) == 2.0  # a new period starts afresh
    # The bucket refills with time.
    for _ in range(2):
        assert (await state.take("rpm", 1, capacity=2, per_second=1.0)).ok
    assert not (await state.take("rpm", 1, capacity=2, per_second=1.0)).ok
    clock.advance(1)
    assert (await state.take("rpm", 1, capacity=2, per_second=1.0)).ok


async def test_the_memory_cache_keeps_its_bounds_dropping_the_least_recent() -> None:
    state = MemoryState(FakeClock().now, max_entries=2, max_bytes=10)
    await state.put("a", b"1234", ttl=60)
    await state.put("b", b"5678", ttl=60)
    assert await state.get("a") == b"1234"  # a is now the most recent
    await state.put("c", b"90", ttl=60)
    assert await state.get("b") is None
    assert await state.get("a") == b"1234"
    await state.put("d", b"123456", ttl=60)  # over 10 bytes with a and c: both go
    assert await state.get("d") == b"123456"
    assert await state.get("c") is None
    await state.put("e", b"x" * 11, ttl=60)  # larger than the whole cache: not kept
    assert await state.get("e") is None


async def test_redis_counters_expire_when_their_period_ends(redis_server: RedisServer) -> None:
    from redis import asyncio as aioredis

    state = RedisState(redis_server.url, prefix="ttl:", timeout=0.5)
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        await state.add("spend:day", 1.0, ttl=86_400)
        await state.add("spend:day", 1.0, ttl=86_400)  # the expiry is set once, not pushed
        assert 86_000 < await raw.ttl("ttl:spend:day") <= 86_400
        await state.put("cache:z", b"v", ttl=2.5)
        assert 0 < await raw.pttl("ttl:cache:z") <= 2500
    finally:
        await raw.aclose()
        await state.close()


async def test_racing_clients_never_take_more_than_the_capacity(redis_server: RedisServer) -> None:
    # Four clients (four connections: as four workers or pods would be) race 200 takes on a
    # bucket of 50, and 200 adds on one counter.
    clients = [RedisState(redis_server.url, prefix="race:", timeout=2.0) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(c.take("rpm", 1, capacity=50, per_second=50 / 3600) for c in clients * 50)
        )
        assert sum(r.ok for r in results) == 50
        await asyncio.gather(*(c.add("spend", 0.01, ttl=60) for c in clients * 50))
        assert await clients[0].total("spend") == pytest.approx(2.0)
    finally:
        await asyncio.gather(*(c.close() for c in clients))


@pytest.mark.skipif(redis_skip_reason() is not None, reason=str(redis_skip_reason()))
async def test_a_redis_that_is_gone_fails_fast_and_says_so() -> None:
    server = RedisServer()
    server.start()
    state = RedisState(server.url, timeout=0.2)
    try:
        await state.add("k", 1.0, ttl=60)
        server.stop()
        for call in (
            state.add("k", 1.0, ttl=60),
            state.take("b", 1, capacity=1, per_second=1),
            state.get("c"),
        ):
            started = time.monotonic()
            with pytest.raises(StateUnavailable, match="Redis"):
                await call
            assert time.monotonic() - started < 1.0
    finally:
        await state.close()
        server.stop()


async def test_admit_reads_the_totals_and_takes_from_every_bucket_or_none(state: State) -> None:
    rpm = Bucket("a:rpm", 1, capacity=2, per_second=2 / 3600)
    tpm = Bucket("a:tpm", 300, capacity=500, per_second=500 / 3600)
    await state.add("a:spend", 0.5, ttl=3600)
    totals, taken = await state.admit([("a:spend", 1.0)], [rpm, tpm], block=True)
    assert totals == [0.5]
    assert [t.ok for t in taken] == [True, True]
    assert [t.remaining for t in taken] == [1, 200]
    # The token bucket is short: neither bucket gives anything.
    totals, taken = await state.admit([("a:spend", 1.0)], [rpm, tpm], block=True)
    assert [t.ok for t in taken] == [False, False]
    assert [t.remaining for t in taken] == [1, 200]
    assert taken[1].retry_after > 0
    # Over its limit with block: nothing taken either, though the buckets have room.
    await state.add("a:spend", 0.5, ttl=3600)
    small = Bucket("a:tpm", 10, capacity=500, per_second=500 / 3600)
    totals, taken = await state.admit([("a:spend", 1.0)], [rpm, small], block=True)
    assert totals == [1.0]
    assert [t.ok for t in taken] == [False, False]
    totals, taken = await state.admit([("a:spend", 1.0)], [rpm, small], block=False)
    assert [t.ok for t in taken] == [True, True]


async def test_settle_adds_and_charges_in_one_call(state: State) -> None:
    tpm = Bucket("s:tpm", 100, capacity=1000, per_second=1000 / 3600)
    await state.admit([], [tpm], block=False)  # 900 left
    await state.settle(
        [("s:day", 0.25, 86_400), ("s:month", 0.25, 86_400 * 31)],
        [Bucket("s:tpm", 400, capacity=1000, per_second=1000 / 3600)],
    )
    assert await state.total("s:day") == 0.25
    assert await state.total("s:month") == 0.25
    _, (left,) = await state.admit([], [Bucket("s:tpm", 1, 1000, 1000 / 3600)], block=False)
    assert 498 <= left.remaining <= 500  # 900 - 400 - 1, give or take the refill


async def test_admit_holds_an_estimate_only_when_everything_went_through(state: State) -> None:
    rpm = Bucket("h:rpm", 1, capacity=2, per_second=2 / 3600)
    limits = [("h:day", 1.0), ("h:month", 5.0)]
    ttls = [3600.0, 7200.0]
    totals, _ = await state.admit(limits, [rpm], block=True, hold=0.4, ttls=ttls)
    assert totals == [0.0, 0.0]  # as they were before this request
    assert [await state.total(k) for k, _ in limits] == [0.4, 0.4]
    await state.admit(limits, [rpm], block=True, hold=0.4, ttls=ttls)
    # The bucket is empty: nothing taken, nothing held.
    totals, taken = await state.admit(limits, [rpm], block=True, hold=0.4, ttls=ttls)
    assert not taken[0].ok
    assert [await state.total(k) for k, _ in limits] == [0.8, 0.8]
    # Settled: the actual cost replaces the estimate (here, less than it).
    await state.settle([("h:day", -0.3, 3600), ("h:month", -0.3, 7200)], [])
    assert await state.total("h:day") == pytest.approx(0.5)
    # Over a limit (no block: capped): admitted, but nothing held.
    await state.add("h:day", 0.5, ttl=3600)
    totals, _ = await state.admit([("h:day", 1.0)], [], block=False, hold=0.4, ttls=[3600.0])
    assert totals == [pytest.approx(1.0)]
    assert await state.total("h:day") == pytest.approx(1.0)
