"""What a proxy key may spend and how fast: budgets per day and month, requests and tokens
per minute, checked before a request is forwarded and settled once its answer is in.

- **Rate limits** are token buckets (``State.take``) of ``rpm`` requests and ``tpm`` tokens
  per minute; a request takes one request and its estimated tokens (prompt + expected
  answer), and the answer's actual tokens are settled afterwards (``State.charge``). Refused:
  a 429 with ``retry-after`` and OpenAI's ``x-ratelimit-*`` headers; admitted: the same
  headers on the answer.
- **Budgets** are counters of USD per UTC day and month (``State.add``). A request is
  refused (429 until the period resets) or capped to the light tier (``over_budget =
  "cap"``) once what the key spent reaches its budget; what it then spends is added from
  its account. An admitted request holds its estimated cost in the budgets (in the same
  call as the checks) until its settlement replaces the hold with the actual cost: requests
  in flight count, in every process on the same state.
- **State errors** (Redis unreachable or slow) never hang a request: the backend's bounded
  timeout, then ``fail_open`` (the check is skipped) or ``fail_closed`` (a 503), a
  rate-limited WARNING and the ``gearshift_state_errors`` counter.
"""

from __future__ import annotations

import calendar
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gearshift.errors import GearshiftError, OverLimit
from gearshift.governance.keys import KeyPolicy
from gearshift.governance.spec import StateSpec
from gearshift.governance.state import Bucket, State, StateUnavailable

log = logging.getLogger("gearshift.governance")
T = TypeVar("T")


class StateDown(GearshiftError):
    """``fail_closed`` and the shared state cannot be reached."""

    status = 503
    type = "server_error"


def duration(seconds: float) -> str:
    """A wait as OpenAI writes it in ``x-ratelimit-reset-*``: ``12ms``, ``7.5s``, ``6m0s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{round(rest, 2):g}s"
    return f"{int(minutes)}m{text}" if minutes else text


def periods(now: float) -> tuple[tuple[str, float], tuple[str, float]]:
    """The current UTC day and month: (a name, seconds until it ends) each."""
    t = time.gmtime(now)
    day_end = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86_400
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    month_end = calendar.timegm((year, month, 1, 0, 0, 0))
    return (
        (f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", day_end - now),
        (f"{t.tm_year:04d}-{t.tm_mon:02d}", month_end - now),
    )


@dataclass(slots=True)
class Admission:
    """What the checks decided for one request: the headers its answer carries, whether
    its budget capped it to the light tier, and the tokens it took from its bucket."""

    headers: dict[str, str]
    capped: bool = False
    tokens_taken: int = 0
    held_usd: float = 0.0  # the estimate held in its budgets until it is settled


class Governor:
    """Budgets and rate limits over one ``State`` (in-process or Redis). ``wall``: the wall
    clock (UTC periods); tests inject it."""

    def __init__(
        self,
        state: State,
        spec: StateSpec,
        *,
        wall: Callable[[], float] = time.time,
        on_error: Callable[[], None] = lambda: None,
    ) -> None:
        self.state = state
        self._fail_open = spec.on_error == "fail_open"
        self._backend = spec.backend
        self._wall = wall
        self._on_error = on_error
        self._last_warning = -math.inf

    async def _safe(self, work: Awaitable[T], default: T) -> T:
        """``work``, or on a state error: ``default`` (fail open) or a 503 (fail closed)."""
        try:
            return await work
        except StateUnavailable as exc:
            self._on_error()
            now = time.monotonic()
            if now - self._last_warning >= 10:  # one line per 10 s at most
                self._last_warning = now
                log.warning(
                    "shared state (%s) unavailable: %s; %s",
                    self._backend,
                    exc,
                    "requests go on unchecked" if self._fail_open else "requests are refused",
                )
            if self._fail_open:
                return default
            raise StateDown(
                "gearshift cannot check this key's limits right now; try again.",
                code="state_unavailable",
            ) from None

    def refuse_budget(self, policy: KeyPolicy, retry_after: float) -> OverLimit:
        return OverLimit(
            f"The proxy key {policy.name!r} has spent its budget; it renews in "
            f"{duration(retry_after)}.",
            code="budget_exceeded",
            kind="insufficient_quota",
            retry_after=retry_after,
        )

    async def check(self, policy: KeyPolicy, tokens: int, estimate_usd: float = 0.0) -> Admission:
        """The key's budget and rate limits for a request of about ``tokens``, in one call to
        the state: a 429 when over budget (``refuse``) or short of requests or tokens (then
        nothing is taken); else the ``x-ratelimit-*`` headers, and ``capped`` when over
        budget with ``cap``. An admitted request under its budgets holds ``estimate_usd`` in
        them until it is settled (``held_usd``)."""
        (day, day_left), (month, month_left) = periods(self._wall())
        limits, waits, ttls = [], [], []
        for budget, period, left in (
            (policy.budget_daily_usd, f"d:{day}", day_left),
            (policy.budget_monthly_usd, f"m:{month}", month_left),
        ):
            if budget is not None:
                limits.append((f"spend:{policy.name}:{period}", budget))
                waits.append(left)
                ttls.append(left + 3600)
        kinds, buckets = [], []
        if policy.rpm is not None:
            kinds.append(("requests", policy.rpm))
            buckets.append(Bucket(f"rpm:{policy.name}", 1, policy.rpm, policy.rpm / 60))
        if policy.tpm is not None:
            kinds.append(("tokens", policy.tpm))
            buckets.append(Bucket(f"tpm:{policy.name}", tokens, policy.tpm, policy.tpm / 60))
        refuse = policy.over_budget != "cap"
        answer = await self._safe(
            self.state.admit(limits, buckets, refuse, hold=estimate_usd, ttls=ttls), None
        )
        if answer is None:  # failed open: nothing known, nothing taken
            return Admission({})
        totals, taken = answer
        over = [w for (_, budget), total, w in zip(limits, totals, waits, strict=True)
                if total >= budget]  # fmt: skip
        if over and refuse:
            raise self.refuse_budget(policy, max(over))
        headers: dict[str, str] = {}
        for (kind, limit), t in zip(kinds, taken, strict=True):
            per_second = limit / 60
            headers[f"x-ratelimit-limit-{kind}"] = str(limit)
            headers[f"x-ratelimit-remaining-{kind}"] = str(max(0, int(t.remaining)))
            headers[f"x-ratelimit-reset-{kind}"] = duration((limit - t.remaining) / per_second)
        for (kind, limit), t, bucket in zip(kinds, taken, buckets, strict=True):
            if t.ok:
                continue
            if bucket.cost > limit:
                message = (
                    f"This request needs about {int(bucket.cost)} tokens, more than the proxy "
                    f"key {policy.name!r} may use in a minute ({limit})."
                )
                wait = 60.0
            else:
                wait = t.retry_after
                message = (
                    f"Rate limit of the proxy key {policy.name!r} reached: {limit} {kind} "
                    f"per minute; try again in {duration(wait)}."
                )
            raise OverLimit(
                message,
                code="rate_limit_exceeded",
                kind=kind,
                retry_after=wait,
                limit_headers=headers,
            )
        return Admission(
            headers,
            capped=bool(over),
            tokens_taken=tokens if policy.tpm is not None else 0,
            held_usd=estimate_usd if limits and not over else 0.0,
        )

    async def spent(self, policy: KeyPolicy) -> dict[str, float | None] | None:
        """What the key spent this UTC day and month, for the budgets it has (shared over
        every process on the same state); None when the state cannot be read."""
        (day, _), (month, _) = periods(self._wall())
        out: dict[str, float | None] = {}
        try:
            if policy.budget_daily_usd is not None:
                out["daily_usd"] = policy.budget_daily_usd
                out["spent_today_usd"] = await self.state.total(f"spend:{policy.name}:d:{day}")
            if policy.budget_monthly_usd is not None:
                out["monthly_usd"] = policy.budget_monthly_usd
                out["spent_this_month_usd"] = await self.state.total(
                    f"spend:{policy.name}:m:{month}"
                )
        except StateUnavailable:
            self._on_error()
            return None
        return out

    async def settle(
        self, policy: KeyPolicy, cost_usd: float, tokens_taken: int, tokens: int
    ) -> None:
        """After the answer: its cost (less what its admission held: negative when the
        estimate was more) into the key's day and month, and the tokens it used beyond (or
        short of) what it took from the token bucket, in one call."""
        adds: list[tuple[str, float, float]] = []
        if policy.budgeted and cost_usd != 0:
            (day, day_left), (month, month_left) = periods(self._wall())
            if policy.budget_daily_usd is not None:
                adds.append((f"spend:{policy.name}:d:{day}", cost_usd, day_left + 3600))
            if policy.budget_monthly_usd is not None:
                adds.append((f"spend:{policy.name}:m:{month}", cost_usd, month_left + 3600))
        charges: list[Bucket] = []
        if policy.tpm is not None and tokens_taken and tokens != tokens_taken:
            tpm = policy.tpm
            charges.append(Bucket(f"tpm:{policy.name}", tokens - tokens_taken, tpm, tpm / 60))
        if adds or charges:
            await self._safe(self.state.settle(adds, charges), None)


__all__ = ["Admission", "Governor", "StateDown", "duration", "periods"]
