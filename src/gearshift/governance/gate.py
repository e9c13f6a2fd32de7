"""A proxy key's policy applied to one request, around the routing decision: the models it
may ask for, its default tier, the tiers it may reach, its budget and its rate limits. And
the sink that settles what the answer cost into the key's budget and token bucket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from gearshift.errors import Forbidden
from gearshift.governance.governor import Governor
from gearshift.governance.keys import KeyPolicy
from gearshift.routing.policy import Plan
from gearshift.serve.exchange import Exchange

TIER_HEADER = "x-gearshift-tier"
Planner = Callable[[Mapping[str, str]], Plan]  # headers (the tier hint among them) -> a plan


def _with_tier(headers: Mapping[str, str], tier: str) -> Mapping[str, str]:
    out = {k.lower(): v for k, v in headers.items()}
    out[TIER_HEADER] = tier
    return out


def _hinted(headers: Mapping[str, str], model: str, hints: Mapping[str, object]) -> bool:
    return TIER_HEADER in headers or "tier" in hints or model.startswith("gearshift/")


async def plan_for_key(
    planner: Planner,
    headers: Mapping[str, str],
    *,
    model: str,
    hints: Mapping[str, object],
    aliases: frozenset[str],
    key: KeyPolicy,
    governor: Governor | None,
    tiers: tuple[str, ...],
    ex: Exchange,
) -> Plan:
    """The plan for this request under ``key``'s policy (``governor``: None when no key has
    limits); raises ``Forbidden`` or ``OverLimit``."""
    ex.key, ex.policy = key.name, key
    if key.models and model not in key.models and model not in aliases:
        raise Forbidden(
            f"The proxy key {key.name!r} may not use the model {model!r}; it may use: "
            f"{', '.join(sorted(key.models))} (or routing by tier).",
            param="model",
            code="model_not_allowed",
        )
    if key.default_tier and not _hinted(headers, model, hints):
        headers = _with_tier(headers, key.default_tier)
    plan = planner(headers)
    if key.tiers and plan.tier not in key.tiers:
        # The highest tier the key may reach below the one needed, else its lowest.
        rank = tiers.index(plan.tier)
        allowed = [t for t in tiers if t in key.tiers]
        below = [t for t in allowed if tiers.index(t) < rank]
        plan = planner(_with_tier(headers, below[-1] if below else allowed[0]))
        plan.reason = f"{plan.reason},key-tiers"
    if governor is None or not (key.budgeted or key.limited):
        return plan
    admission = await governor.check(
        key, plan.prompt_tokens + plan.output_tokens, plan.est_cost_usd
    )
    ex.limit_headers = admission.headers or None
    ex.tokens_taken = admission.tokens_taken
    ex.held_usd = admission.held_usd
    if admission.capped:
        ex.budget_state = "capped"
        if plan.tier != tiers[0]:
            plan = planner(_with_tier(headers, tiers[0]))
            plan.reason = f"{plan.reason},budget-capped"
    return plan


class Spend:
    """The observation sink that settles each answered request of a key with a budget or a
    token limit: its cost into the key's day and month, its tokens against its bucket (in a
    task: the state may be Redis). The key's policy is the one the request was admitted
    under, whatever a reload changed since."""

    def __init__(self, governor: Governor) -> None:
        self._governor = governor
        self._tasks: set[asyncio.Task[None]] = set()
        self.settled = 0  # requests settled so far
        self._progress: asyncio.Event | None = None

    def begin(self, ex: Exchange) -> None:
        pass

    def finish(self, ex: Exchange) -> None:
        key = ex.policy
        a = ex.account
        if key is None or not (key.budgeted or key.tpm is not None):
            return
        if a is None and not ex.held_usd:
            return
        # What it cost, less what its admission held (an answer that never came gives back
        # all of it); the tokens it used, against what it took.
        cost = (a.cost_usd if a is not None else 0.0) - ex.held_usd
        used = a.tokens.prompt + a.tokens.completion if a is not None else ex.tokens_taken
        task = asyncio.get_running_loop().create_task(
            self._governor.settle(key, cost, ex.tokens_taken, used)
        )
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.settled += 1
        if self._progress is not None:
            self._progress.set()

    async def wait_settled(self, n: int) -> None:
        """Until ``n`` requests are settled in all (tests; an operator's drain)."""
        while self.settled < n:
            self._progress = progress = asyncio.Event()
            await progress.wait()

    async def drain(self) -> None:
        """Wait for the settlements under way (at shutdown; tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


__all__ = ["Spend", "plan_for_key"]
