"""One request's story, owned by one object.

The handler creates an ``Exchange`` when a request arrives; the planner's decision, the
router's attempts, the relay's usage and cost and the handler's outcome are written into it;
the observation sinks read it once the answer is on its way. Which object owns a fact about
a request has one answer: this one.

=====================  ==========================================================
what was asked         ``request_id``, ``requested``, ``stream``, ``prompt``, ``budget``
the decision           ``plan`` (tier, score, targets, estimates), ``decision_s``
the conversation       ``session`` (its key), ``previous`` (the label of the model that
                       served its previous turn), both before the plan; ``sticky``
every attempt          ``attempts`` (one ``Attempt`` each, in order; the router)
who served             ``served_by``, ``degraded``, ``upstream_request_id``, ``dropped``,
                       ``effort``
usage and cost         ``usage``, ``events``, ``account`` (the relay)
timings                ``started``, ``ended``, ``upstream_s``, ``ttfb_s``, ``client_s``
outcome                ``status``: an HTTP status, ``499`` (client left) or ``stream_error``
=====================  ==========================================================

Times are ``time.perf_counter`` seconds (the deadline and breakers run on the injected
clock; these only measure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from gearshift.config import Model
from gearshift.governance.keys import KeyPolicy
from gearshift.routing.policy import Plan
from gearshift.serve.accounting import Account


@dataclass(slots=True)
class Attempt:
    """One try at one target. ``outcome``: ``…`` (under way), ``ok``, ``open`` (skipped: its
    breaker is open), ``abandoned`` (its breaker opened while this attempt waited),
    ``deadline``, ``rejected`` or a failure kind (``unavailable``, ``timeout`` …)."""

    model: str
    provider: str
    outcome: str = "…"
    status: int | None = None

    def __str__(self) -> str:
        status = f"/{self.status}" if self.status and self.outcome != "ok" else ""
        return f"{self.model}@{self.provider}:{self.outcome}{status}"


@dataclass(slots=True)
class Exchange:
    """What happened to one request (see the module docstring for who writes what)."""

    request_id: str
    started: float
    requested: str = "-"
    stream: bool = False
    prompt: str | None = None  # only with ``server.log_prompts``
    budget: float = math.inf  # the seconds the client allows (``x-gearshift-timeout``)
    plan: Plan | None = None
    decision_s: float | None = None  # None: refused before the routing decision
    session: str | None = None  # the conversation's key (routing/sticky.py); None: none, or off
    previous: str | None = None  # the label of the model that served its previous turn
    attempts: list[Attempt] = field(default_factory=list)
    served_by: Model | None = None
    degraded: str | None = None  # "<required>-><served>" when a lower tier served it
    upstream_request_id: str | None = None
    dropped: tuple[str, ...] = ()  # parameters the serving model refuses, not sent to it
    effort: str | None = None  # the reasoning effort sent to a reasoning model (None: none)
    usage: dict[str, Any] | None = None  # the upstream's, normalised to OpenAI's shape
    events: int = 0  # stream events read (estimates the answer when there is no usage)
    account: Account | None = None
    upstream_s: float = 0.0  # in upstream calls, retry waits and a stream's upstream reads
    ttfb_s: float | None = None  # the answering call's time to its first byte or event
    client_s: float = 0.0  # waiting on writes to a slow client
    status: int | str = 200
    ended: float | None = None  # when the handler returned (the sinks run a little later)
    # Governance: the proxy key's name (its label, never the key), how its budget went
    # ("capped" to the light tier), the x-ratelimit-* headers of its answer and the tokens
    # its request took from its bucket (settled against the answer's).
    key: str = "unnamed"
    policy: KeyPolicy | None = None  # the key's policy as the request was admitted under it
    cache: str | None = None  # "hit", "miss" or "refresh" when the cache took part
    cache_key: str | None = None  # where the answer is to be stored
    budget_state: str | None = None
    limit_headers: dict[str, str] | None = None
    tokens_taken: int = 0
    sample: Any = None  # chosen for the outcome store (learn/shadow.py's Sample)
    held_usd: float = 0.0  # the estimated cost its admission held in its key's budgets

    @property
    def tier(self) -> str:
        return self.plan.tier if self.plan is not None else "-"

    @property
    def score(self) -> str:
        return self.plan.score if self.plan is not None else "-"

    @property
    def sticky(self) -> str | None:
        """How stickiness went: "hit" (the conversation's previous model answered again),
        "miss" (it went first but another model answered, or none did), "moved" (it no
        longer qualified), "new" (no previous model); None without a session or when it
        did not apply (a pin)."""
        if self.session is None or self.plan is None or self.plan.sticky is None:
            return None
        if self.plan.sticky != "hit":
            return self.plan.sticky
        served = self.served_by
        return "hit" if served is not None and served.label == self.previous else "miss"

    @property
    def model(self) -> str | None:
        return self.served_by.name if self.served_by is not None else None

    @property
    def provider(self) -> str | None:
        return self.served_by.provider.name if self.served_by is not None else None

    @property
    def calls(self) -> int:
        """Attempts that reached for an upstream (breaker skips not counted)."""
        return sum(1 for a in self.attempts if a.outcome != "open")

    @property
    def fallbacks(self) -> int:
        return max(0, len(self.attempts) - 1)

    def attempt_log(self) -> str:
        return ", ".join(str(a) for a in self.attempts)

    def latency_s(self, now: float) -> float:
        return (self.ended if self.ended is not None else now) - self.started

    def overhead_s(self, now: float) -> float:
        """gearshift's own time: all of it but the upstream's and the client's."""
        return max(0.0, self.latency_s(now) - self.upstream_s - self.client_s)


__all__ = ["Attempt", "Exchange"]
