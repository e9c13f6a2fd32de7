"""Shared state for budgets, rate limits and the response cache: one interface, two backends.

``MemoryState`` (the default) lives in one process: right for one process, per worker with
``serve --workers``. ``RedisState`` keeps the same state in Redis, so that every worker and
every pod that points at one Redis shares one view. Each operation is atomic where it must
be (a Lua script, or ``INCRBYFLOAT`` and ``EXPIRE`` in one transaction): two processes never
both take the last unit of a limit.

The primitives, all keyed by strings the caller builds (a key's name, a period, a model):

- ``add(key, amount, ttl)``: add to a counter that expires ``ttl`` seconds after it was
  created (spend per day or month), and get the new total; ``total(key)`` reads it.
- ``take(key, cost, capacity, per_second)``: a token bucket (rate limits: requests or tokens
  per minute). It refills at ``per_second`` up to ``capacity``; ``cost`` is taken only if the
  bucket holds that much, else nothing is taken and the answer says how long until it does.
  ``charge(key, amount, capacity, per_second)`` takes without asking (the tokens an answer
  used beyond its estimate), and may leave the bucket below zero; a negative amount gives
  back (never beyond ``capacity``).
- ``get(key)`` / ``put(key, value, ttl)``: bytes with an expiry (the response cache).
- ``admit(limits, buckets, block, hold=, ttls=)``: one request's checks in one call: the
  totals of the counters ``limits`` names (as they were before this request), then from every
  bucket its cost, all or none (when any is short nothing is taken; with ``block``, nothing
  either when a total has reached its limit); and when all went through and no total had
  reached its limit, ``hold`` added to every counter (the request's estimated cost, held
  until its settlement replaces it with the actual: requests in flight count against a
  budget). ``ttls``: each counter's expiry when this creates it.
  ``settle(adds, charges)``: a request's counters and charges, in one call.

Every Redis call is bounded by the backend's ``timeout``; a failure or a timeout raises
``StateUnavailable``, and the caller applies its configured policy (fail open or closed).
Redis's own clock (``TIME``) drives the Redis buckets, so processes whose clocks disagree
still agree on a bucket.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class StateUnavailable(Exception):
    """The shared state could not be reached in time (or answered with an error)."""


@dataclass(frozen=True, slots=True)
class Taken:
    """A token bucket's answer: whether ``cost`` was taken, what is left (rounded down), and
    the seconds until ``cost`` would fit (0 when it was taken)."""

    ok: bool
    remaining: float
    retry_after: float


@dataclass(frozen=True, slots=True)
class Bucket:
    """A token bucket and what to take from it (``admit``) or charge it (``settle``)."""

    key: str
    cost: float
    capacity: float
    per_second: float


class State(Protocol):
    async def admit(
        self,
        limits: Sequence[tuple[str, float]],
        buckets: Sequence[Bucket],
        block: bool,
        *,
        hold: float = 0.0,
        ttls: Sequence[float] = (),
    ) -> tuple[list[float], list[Taken]]: ...

    async def settle(
        self, adds: Sequence[tuple[str, float, float]], charges: Sequence[Bucket]
    ) -> None: ...

    async def add(self, key: str, amount: float, ttl: float) -> float: ...

    async def total(self, key: str) -> float: ...

    async def take(self, key: str, cost: float, capacity: float, per_second: float) -> Taken: ...

    async def charge(self, key: str, amount: float, capacity: float, per_second: float) -> None: ...

    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: float) -> None: ...

    async def close(self) -> None: ...


def _refilled(level: float, last: float, now: float, capacity: float, per_second: float) -> float:
    return min(capacity, level + max(0.0, now - last) * per_second)


def _wait(level: float, cost: float, per_second: float) -> float:
    return math.inf if per_second <= 0 else max(0.0, (cost - level) / per_second)


def _taken(ok: bool, level: float, b: Bucket) -> Taken:
    """A bucket's answer once ``cost`` was taken (``ok``) or not, ``level`` now in it."""
    if ok:
        return Taken(True, math.floor(level), 0.0)
    return Taken(False, max(0, math.floor(level)), _wait(level, b.cost, b.per_second))


class MemoryState:
    """The in-process backend: dicts on an injected clock (monotonic seconds). The cache
    holds at most ``max_entries`` values and ``max_bytes`` bytes, the least recently used
    going first."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._clock = clock
        self._counters: dict[str, tuple[float, float]] = {}  # key -> (total, expires at)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (level, updated at)
        self._cache: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._cache_bytes = 0
        self._max_entries = max_entries
        self._max_bytes = max_bytes

    async def admit(
        self,
        limits: Sequence[tuple[str, float]],
        buckets: Sequence[Bucket],
        block: bool,
        *,
        hold: float = 0.0,
        ttls: Sequence[float] = (),
    ) -> tuple[list[float], list[Taken]]:
        now = self._clock()
        totals = [await self.total(key) for key, _ in limits]
        over = any(t >= limit for t, (_, limit) in zip(totals, limits, strict=True))
        blocked = block and over
        levels = []
        for b in buckets:
            level, last = self._buckets.get(b.key, (b.capacity, now))
            levels.append(_refilled(level, last, now, b.capacity, b.per_second))
        fits = not blocked and all(lv >= b.cost for lv, b in zip(levels, buckets, strict=True))
        taken = []
        for level, b in zip(levels, buckets, strict=True):
            if fits:
                level -= b.cost
            self._buckets[b.key] = (level, now)
            taken.append(_taken(fits, level, b))
        if fits and not over and hold > 0:
            for (key, _), ttl in zip(limits, ttls or [86_400.0] * len(limits), strict=True):
                await self.add(key, hold, ttl)
        return totals, taken

    async def settle(
        self, adds: Sequence[tuple[str, float, float]], charges: Sequence[Bucket]
    ) -> None:
        for key, amount, ttl in adds:
            await self.add(key, amount, ttl)
        for b in charges:
            await self.charge(b.key, b.cost, b.capacity, b.per_second)

    async def add(self, key: str, amount: float, ttl: float) -> float:
        now = self._clock()
        total, expires = self._counters.get(key, (0.0, 0.0))
        if expires <= now:
            total, expires = 0.0, now + ttl
        total += amount
        self._counters[key] = (total, expires)
        if len(self._counters) > 4 * self._max_entries:
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
        return total

    async def total(self, key: str) -> float:
        total, expires = self._counters.get(key, (0.0, 0.0))
        return total if expires > self._clock() else 0.0

    async def take(self, key: str, cost: float, capacity: float, per_second: float) -> Taken:
        now = self._clock()
        level, last = self._buckets.get(key, (capacity, now))
        level = _refilled(level, last, now, capacity, per_second)
        if level >= cost:
            self._buckets[key] = (level - cost, now)
            return Taken(True, math.floor(level - cost), 0.0)
        self._buckets[key] = (level, now)
        return Taken(False, max(0, math.floor(level)), _wait(level, cost, per_second))

    async def charge(self, key: str, amount: float, capacity: float, per_second: float) -> None:
        now = self._clock()
        level, last = self._buckets.get(key, (capacity, now))
        level = _refilled(level, last, now, capacity, per_second)
        self._buckets[key] = (min(capacity, level - amount), now)

    async def get(self, key: str) -> bytes | None:
        found = self._cache.get(key)
        if found is None:
            return None
        value, expires = found
        if expires <= self._clock():
            self._drop(key)
            return None
        self._cache.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self._max_bytes:
            return
        self._drop(key)
        self._cache[key] = (value, self._clock() + ttl)
        self._cache_bytes += len(value)
        while len(self._cache) > self._max_entries or self._cache_bytes > self._max_bytes:
            self._drop(next(iter(self._cache)))

    def _drop(self, key: str) -> None:
        found = self._cache.pop(key, None)
        if found is not None:
            self._cache_bytes -= len(found[0])

    async def close(self) -> None:
        pass


# KEYS[1]: the bucket; ARGV: cost, capacity, per_second, charge (1: take without asking).
# The bucket is a hash {level, at} in microseconds of Redis's own clock; it expires once it
# would be full again (nothing to remember then).
_BUCKET = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost, capacity, rate = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'level', 'at')
local level = tonumber(state[1])
local at = tonumber(state[2])
if level == nil then
  level = capacity
  at = now
end
level = math.min(capacity, level + math.max(0, now - at) * rate)
local ok = 0
if ARGV[4] == '1' then
  level = math.min(capacity, level - cost)
  ok = 1
elseif level >= cost then
  level = level - cost
  ok = 1
end
redis.call('HSET', KEYS[1], 'level', tostring(level), 'at', tostring(now))
local full_in = capacity
if rate > 0 then full_in = math.max(1, math.ceil((capacity - level) / rate) + 1) end
redis.call('EXPIRE', KEYS[1], full_in)
return {ok, tostring(level)}
"""


# KEYS: the n counters, then the m buckets. ARGV: n, the n limits, block (1/0), hold, the n
# counters' TTLs, then cost, capacity and per_second of each bucket. Returns the n totals
# (before the hold), then ok and level per bucket (numbers as strings: Redis would cut Lua
# floats to integers).
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = tonumber(ARGV[1])
local out = {}
local over = false
for i = 1, n do
  local v = tonumber(redis.call('GET', KEYS[i]) or '0')
  out[#out + 1] = tostring(v)
  if v >= tonumber(ARGV[1 + i]) then over = true end
end
local blocked = ARGV[n + 2] == '1' and over
local hold = tonumber(ARGV[n + 3])
local first = 2 * n + 3
local m = #KEYS - n
local levels = {}
local fits = not blocked
for j = 1, m do
  local base = first + (j - 1) * 3
  local cost = tonumber(ARGV[base + 1])
  local capacity = tonumber(ARGV[base + 2])
  local rate = tonumber(ARGV[base + 3])
  local state = redis.call('HMGET', KEYS[n + j], 'level', 'at')
  local level, at = tonumber(state[1]), tonumber(state[2])
  if level == nil then
    level = capacity
    at = now
  end
  level = math.min(capacity, level + math.max(0, now - at) * rate)
  levels[j] = level
  if level < cost then fits = false end
end
if fits and not over and hold > 0 then
  for i = 1, n do
    redis.call('INCRBYFLOAT', KEYS[i], hold)
    if redis.call('TTL', KEYS[i]) < 0 then
      redis.call('EXPIRE', KEYS[i], math.max(1, math.ceil(tonumber(ARGV[n + 3 + i]))))
    end
  end
end
for j = 1, m do
  local base = first + (j - 1) * 3
  local cost = tonumber(ARGV[base + 1])
  local capacity = tonumber(ARGV[base + 2])
  local rate = tonumber(ARGV[base + 3])
  local level = levels[j]
  local ok = 0
  if fits then
    level = level - cost
    ok = 1
  end
  redis.call('HSET', KEYS[n + j], 'level', tostring(level), 'at', tostring(now))
  local full_in = capacity
  if rate > 0 then full_in = math.max(1, math.ceil((capacity - level) / rate) + 1) end
  redis.call('EXPIRE', KEYS[n + j], full_in)
  out[#out + 1] = tostring(ok)
  out[#out + 1] = tostring(level)
end
return out
"""


class RedisState:
    """The shared backend (``redis-py``'s asyncio client). ``prefix`` namespaces every key
    (several gearshift deployments may share one Redis)."""

    def __init__(self, url: str, *, prefix: str = "gearshift:", timeout: float = 0.05) -> None:
        try:
            from redis import asyncio as aioredis
        except ImportError:  # pragma: no cover - the extra is missing
            raise StateUnavailable(
                "the Redis backend needs redis-py: pip install 'gearshift[redis]'"
            ) from None
        self._redis: Any = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._prefix = prefix
        self._timeout = timeout
        self._bucket = self._redis.register_script(_BUCKET)
        self._admit = self._redis.register_script(_ADMIT)

    async def _call(self, work: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(self._timeout * 2):
                return await work
        except (RedisError, OSError, TimeoutError) as exc:
            raise StateUnavailable(f"Redis: {type(exc).__name__}: {exc}") from None

    async def admit(
        self,
        limits: Sequence[tuple[str, float]],
        buckets: Sequence[Bucket],
        block: bool,
        *,
        hold: float = 0.0,
        ttls: Sequence[float] = (),
    ) -> tuple[list[float], list[Taken]]:
        p = self._prefix
        keys = [p + key for key, _ in limits] + [p + b.key for b in buckets]
        args: list[str | int] = [len(limits), *(repr(float(lim)) for _, lim in limits)]
        args += [int(block), repr(float(hold))]
        args += [repr(float(t)) for t in (ttls or [86_400.0] * len(limits))]
        for b in buckets:
            args += [repr(float(b.cost)), repr(float(b.capacity)), repr(float(b.per_second))]
        out = await self._call(self._admit(keys=keys, args=args))
        n = len(limits)
        totals = [float(v) for v in out[:n]]
        rest = out[n:]
        taken = [
            _taken(int(rest[2 * j]) == 1, float(rest[2 * j + 1]), b) for j, b in enumerate(buckets)
        ]
        return totals, taken

    async def settle(
        self, adds: Sequence[tuple[str, float, float]], charges: Sequence[Bucket]
    ) -> None:
        async def work() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, amount, ttl in adds:
                    pipe.incrbyfloat(self._prefix + key, amount)
                    pipe.expire(self._prefix + key, max(1, math.ceil(ttl)), nx=True)
                for b in charges:
                    args: list[str | int] = [
                        repr(float(b.cost)), repr(float(b.capacity)), repr(float(b.per_second)), 1
                    ]  # fmt: skip
                    await self._bucket(keys=[self._prefix + b.key], args=args, client=pipe)
                await pipe.execute()

        await self._call(work())

    async def add(self, key: str, amount: float, ttl: float) -> float:
        async def work() -> float:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(self._prefix + key, amount)
                pipe.expire(self._prefix + key, max(1, math.ceil(ttl)), nx=True)
                total, _ = await pipe.execute()
            return float(total)

        result: float = await self._call(work())
        return result

    async def total(self, key: str) -> float:
        value = await self._call(self._redis.get(self._prefix + key))
        return float(value) if value is not None else 0.0

    async def _bucket_call(
        self, key: str, cost: float, capacity: float, per_second: float, charge: bool
    ) -> tuple[int, float]:
        args: list[str | int] = [
            repr(float(cost)), repr(float(capacity)), repr(float(per_second)), int(charge)
        ]  # fmt: skip
        ok, level = await self._call(self._bucket(keys=[self._prefix + key], args=args))
        return int(ok), float(level)

    async def take(self, key: str, cost: float, capacity: float, per_second: float) -> Taken:
        ok, level = await self._bucket_call(key, cost, capacity, per_second, False)
        if ok:
            return Taken(True, math.floor(level), 0.0)
        return Taken(False, max(0, math.floor(level)), _wait(level, cost, per_second))

    async def charge(self, key: str, amount: float, capacity: float, per_second: float) -> None:
        await self._bucket_call(key, amount, capacity, per_second, True)

    async def get(self, key: str) -> bytes | None:
        value = await self._call(self._redis.get(self._prefix + key))
        return bytes(value) if value is not None else None

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        await self._call(self._redis.set(self._prefix + key, value, px=max(1, round(ttl * 1000))))

    async def close(self) -> None:
        await self._redis.aclose()


def open_state(config: Any, now: Callable[[], float] = time.monotonic) -> State:
    """The state ``config`` (a ``Config``) names: Redis at ``state.url``, else in-process
    (bounded by the cache's sizes)."""
    if config.state.backend == "redis" and config.state_url is not None:
        spec = config.state
        return RedisState(config.state_url.reveal(), prefix=spec.prefix, timeout=spec.timeout)
    return MemoryState(now, max_entries=config.cache.max_entries, max_bytes=config.cache.max_bytes)


__all__ = [
    "Bucket", "MemoryState", "RedisState", "State", "StateUnavailable", "Taken", "open_state",
]  # fmt: skip
