"""The configuration of governance: proxy keys with a policy (``[[keys]]``), where shared state
lives (``[state]``) and the response cache (``[cache]``). Resolved by ``keys.resolve``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Usd = Annotated[float, msgspec.Meta(ge=0, le=1e9)]
PerMinute = Annotated[int, msgspec.Meta(ge=1, le=1_000_000_000)]


class KeySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A proxy key and what it may do. ``key``: ``env:NAME`` (recommended) or a literal;
    gearshift keeps only its digest. Every limit is optional."""

    name: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    key: str
    team: str | None = None
    budget_daily_usd: Usd | None = None
    budget_monthly_usd: Usd | None = None
    # Over budget: a 429 until the period resets ("refuse"), or the light tier ("cap").
    over_budget: Literal["refuse", "cap"] = "refuse"
    rpm: PerMinute | None = None  # requests per minute
    tpm: PerMinute | None = None  # tokens (prompt + expected answer) per minute
    tiers: list[str] = []  # the tiers it may be routed to (empty: all)
    models: list[str] = []  # the models it may ask for by name (empty: all)
    default_tier: str | None = None  # the tier hint when a request gives none


class StateSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where budgets, rate limits and the cache keep their state: this process ("memory")
    or a Redis every worker and pod shares ("redis", ``url``). A call to Redis that takes
    longer than ``timeout`` seconds, or fails, is logged and counted, and the request goes on
    unchecked ("fail_open") or is refused with a 503 ("fail_closed")."""

    backend: Literal["memory", "redis"] = "memory"
    url: str | None = None  # redis://host:6379/0 (a secret reference: env:NAME)
    prefix: str = "gearshift:"
    timeout: Annotated[float, msgspec.Meta(gt=0, le=10)] = 0.05
    on_error: Literal["fail_open", "fail_closed"] = "fail_open"


class CacheSpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The exact-match response cache: off unless ``enabled``; a request may still say
    ``x-gearshift-cache: skip`` or ``refresh``. Answers to requests with a temperature above
    0 are cached only with ``any_temperature``; entries belong to the proxy key that made
    them unless ``shared``."""

    enabled: bool = False
    ttl: Annotated[float, msgspec.Meta(gt=0, le=31_536_000)] = 3600.0
    max_entries: Annotated[int, msgspec.Meta(ge=1, le=10_000_000)] = 10_000
    max_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 40)] = 64 * 1024 * 1024
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=1024, le=1 << 30)] = 1024 * 1024
    any_temperature: bool = False
    shared: bool = False


__all__ = ["CacheSpec", "KeySpec", "StateSpec"]
