"""Every Prometheus object gearshift exports, and its label names.

One ``Metrics`` per app, on its own ``CollectorRegistry`` (tests run many apps in one
process). Label values are bounded: a model label is a catalog model name or ``other``, a
requested model also an alias; providers come from the configuration; statuses are HTTP
codes (plus ``stream_error`` for a stream that failed after its 200). No prompt text, no
keys.

A request's updates are tallied in plain dicts and applied to the Prometheus objects in one
batch (``Metrics.flush``): at each scrape, and at most ``flush_interval`` seconds after a
request begins or ends (so that the other workers' figures in a shared
``PROMETHEUS_MULTIPROC_DIR`` lag by no more).
A metric update through ``prometheus_client`` takes a lock and, with workers, writes a shared
file; a request touches about a dozen: done per request they were 5 % of its CPU.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gearshift.config import Config
from gearshift.serve.breaker import Breaker
from gearshift.serve.exchange import Exchange

# gearshift's own time is tens of microseconds: buckets from 10 µs up.
FAST = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1)
# upstream times: from a cached answer on a LAN to a long generation.
SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
OTHER = "other"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The metric objects; ``model_label`` / ``requested_label`` bound label values."""

    def __init__(self, config: Config, flush_interval: float = 1.0) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # What requests added since the last flush: (metric, labels) -> amount for counters,
        # (metric, labels, value) for histograms, and the in-flight count.
        self._added: dict[tuple[Any, tuple[str, ...]], float] = {}
        self._observed: list[tuple[Any, tuple[str, ...], float]] = []
        self._inflight = 0
        self._flush_interval = flush_interval
        self._flush_handle: asyncio.TimerHandle | None = None
        self._deployments: set[tuple[str, str]] = set()  # with a breaker gauge
        self._dir = config.metrics_dir
        self._models: frozenset[str] = frozenset()
        self._requested: frozenset[str] = frozenset()
        self.requests = Counter(
            "gearshift_requests",
            "Chat completion requests answered, by requested and routed model.",
            ["requested_model", "model", "provider", "tier", "status"],
            registry=r,
        )
        self.cost = Counter(
            "gearshift_cost_usd", "USD spent upstream, by the model that served.", ["model"],
            registry=r,
        )  # fmt: skip
        self.baseline = Counter(
            "gearshift_baseline_usd",
            "USD the same requests would have cost on the requested (or baseline) model.",
            ["requested_model"],
            registry=r,
        )
        self.savings = Counter(
            "gearshift_savings_usd",
            "Baseline minus actual cost.",
            ["requested_model", "model"],
            registry=r,
        )
        self.tokens = Counter(
            "gearshift_tokens",
            "Tokens by kind (prompt, cached, cache_write, completion, reasoning).",
            ["model", "kind"],
            registry=r,
        )
        # The prompt cache's share is ``gearshift_tokens{kind="cached"}`` over
        # ``{kind="prompt"}``; these split both by how stickiness went, to show what it buys.
        self.sticky = Counter(
            "gearshift_sticky",
            "Requests with a session, by how sticky routing went: hit (the session's model "
            "answered again), miss (it went first, another answered or none), moved (it no "
            "longer met the request), new (no model on record).",
            ["result"],
            registry=r,
        )
        self.sticky_tokens = Counter(
            "gearshift_sticky_tokens",
            "Prompt and cached prompt tokens of requests with a session, by sticky result.",
            ["result", "kind"],
            registry=r,
        )
        self.overhead = Histogram(
            "gearshift_overhead_seconds",
            "Time spent in gearshift outside the upstream call and client writes.",
            buckets=FAST,
            registry=r,
        )
        self.decision = Histogram(
            "gearshift_decision_seconds", "Classifier and planner time.", buckets=FAST,
            registry=r,
        )  # fmt: skip
        self.upstream = Histogram(
            "gearshift_upstream_seconds",
            "Time waiting on the upstream (all attempts and retry waits).",
            ["provider"],
            buckets=SLOW,
            registry=r,
        )
        self.ttfb = Histogram(
            "gearshift_ttfb_seconds",
            "Time to the upstream's first byte (streams: first event) of the answering call.",
            ["provider"],
            buckets=SLOW,
            registry=r,
        )
        self.fallbacks = Counter(
            "gearshift_fallbacks",
            "A failed or skipped attempt followed by another, by reason.",
            ["from", "to", "reason"],
            registry=r,
        )
        self.key_spend = Counter(
            "gearshift_key_spend_usd", "USD spent upstream, by proxy key name.", ["key"],
            registry=r,
        )  # fmt: skip
        self.key_requests = Counter(
            "gearshift_key_requests",
            "Requests by proxy key name and status (429: the key's own limit or budget, or a "
            "provider's).",
            ["key", "status"],
            registry=r,
        )
        self.state_errors = Counter(
            "gearshift_state_errors",
            "Calls to the shared state (budgets, limits, cache) that failed or timed out.",
            ["backend"],
            registry=r,
        )
        # With several workers (``serve --workers``), the worst state of any live worker.
        self.breaker = Gauge(
            "gearshift_breaker_state",
            "Circuit breaker per deployment: 0 closed, 1 half-open, 2 open, 3 withdrawn.",
            ["provider", "model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.inflight = Gauge(
            "gearshift_inflight_requests",
            "Chat requests being served now.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.retarget(config)

    def retarget(self, config: Config) -> None:
        """The label values ``config`` allows (at start-up, and after a reload)."""
        self._models = frozenset(config.models) | frozenset(config.embeddings)
        self._requested = (
            self._models
            | frozenset(config.routing.auto_aliases)
            | frozenset(f"gearshift/{tier}" for tier in config.routing.tiers)
        )
        for model in config.offered:  # every deployment starts closed, visibly
            if model.effort is not None:
                continue
            deployment = (model.provider.name, model.name)
            if deployment not in self._deployments:
                self._deployments.add(deployment)
                self.breaker.labels(*deployment).set(0)

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: label values are bounded, and the lookup
        is most of a metric update's cost on the hot path."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def model_label(self, name: str) -> str:
        return name if name in self._models else OTHER

    def requested_label(self, name: str) -> str:
        return name if name in self._requested else OTHER

    def begin(self, ex: Exchange) -> None:
        self._inflight += 1
        if self._flush_handle is None:
            self._schedule()

    def finish(self, ex: Exchange) -> None:
        """The metrics sink: one finished request into the tally of every metric it touches."""
        self._inflight -= 1
        added = self._added
        get = added.get
        observed = self._observed
        model = self.model_label(ex.model) if ex.model else "none"
        requested = self.requested_label(ex.requested)
        provider = ex.provider or "none"
        key: tuple[Any, tuple[str, ...]] = (
            self.requests,
            (requested, model, provider, ex.tier, str(ex.status)),
        )
        added[key] = get(key, 0.0) + 1.0
        observed.append((self.overhead, (), ex.overhead_s(time.perf_counter())))
        if ex.decision_s is not None:
            observed.append((self.decision, (), ex.decision_s))
        attempts = ex.attempts
        if attempts:
            by = provider if ex.provider else attempts[-1].provider
            observed.append((self.upstream, (by,), ex.upstream_s))
        if ex.ttfb_s is not None and ex.provider:
            observed.append((self.ttfb, (ex.provider,), ex.ttfb_s))
        for before, after in itertools.pairwise(attempts):
            key = (
                self.fallbacks,
                (self.model_label(before.model), self.model_label(after.model), before.outcome),
            )
            added[key] = get(key, 0.0) + 1.0
        key = (self.key_requests, (ex.key, str(ex.status)))
        added[key] = get(key, 0.0) + 1.0
        a = ex.account
        if a is not None:
            for key, amount in (
                ((self.key_spend, (ex.key,)), a.cost_usd),
                ((self.cost, (model,)), a.cost_usd),
                ((self.baseline, (requested,)), a.baseline_usd),
                ((self.savings, (requested, model)), a.savings_usd),
            ):
                added[key] = get(key, 0.0) + amount
            for kind, n in a.tokens.by_kind():
                if n:
                    key = (self.tokens, (model, kind))
                    added[key] = get(key, 0.0) + n
        sticky = ex.sticky
        if sticky is not None:
            key = (self.sticky, (sticky,))
            added[key] = get(key, 0.0) + 1.0
            if a is not None:
                for kind, n in (("prompt", a.tokens.prompt), ("cached", a.tokens.cached)):
                    key = (self.sticky_tokens, (sticky, kind))
                    added[key] = get(key, 0.0) + n
        if self._flush_handle is None:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # outside a loop (a test, a script): at once
            self.flush()
        else:
            self._flush_handle = loop.call_later(self._flush_interval, self.flush)

    def flush(self) -> None:
        """Apply the tally to the Prometheus objects."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        added, self._added = self._added, {}
        observed, self._observed = self._observed, []
        child = self.child
        for (metric, labels), amount in added.items():
            child(metric, *labels).inc(amount)
        for metric, labels, value in observed:
            (child(metric, *labels) if labels else metric).observe(value)
        self.inflight.set(self._inflight)

    def state_error(self, backend: str) -> None:
        key = (self.state_errors, (backend,))
        self._added[key] = self._added.get(key, 0.0) + 1.0

    def breaker_changed(self, breaker: Breaker, old: int) -> None:
        provider, _, model = breaker.name.partition("/")
        self.breaker.labels(provider, self.model_label(model)).set(breaker.state)

    def exposition(self) -> bytes:
        """This process's metrics, or with ``serve --workers`` (a shared
        ``PROMETHEUS_MULTIPROC_DIR``) every worker's, summed."""
        self.flush()
        directory = self._dir
        if not directory:
            return generate_latest(self.registry)
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(combined)


__all__ = ["CONTENT_TYPE", "FAST", "SLOW", "Metrics"]
