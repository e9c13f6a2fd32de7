"""One call per finished request: Prometheus metrics, the stats aggregates and the access
log line, from a ``Record`` the handler fills in.

The access log is one JSON object per line on the ``gearshift.access`` logger: request id,
requested and routed model, tier, score, tokens, cost, baseline, latency, overhead,
attempts, status. Prompt text only with ``server.log_prompts = true``, and then with the
provider keys and key-like tokens masked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import orjson

from gearshift.config import Config
from gearshift.errors import scrub
from gearshift.observe.metrics import Metrics
from gearshift.observe.stats import Stats
from gearshift.serve.accounting import Account
from gearshift.serve.router import Attempt

access_log = logging.getLogger("gearshift.access")
_ATOMIC = 4096  # PIPE_BUF on Linux: writes up to this size to a pipe are never interleaved


@dataclass(slots=True)
class Record:
    """What one request did. Times are ``time.perf_counter`` seconds."""

    request_id: str
    started: float
    requested: str = "-"
    stream: bool = False
    tier: str = "-"
    score: str = "-"
    model: str | None = None
    provider: str | None = None
    status: int | str = 200
    account: Account | None = None
    attempts: list[Attempt] = field(default_factory=list)
    decision_s: float | None = None  # None: refused before the routing decision
    upstream_s: float = 0.0  # every attempt and retry wait, and a stream's upstream reads
    client_s: float = 0.0  # waiting on writes to a slow client
    ttfb_s: float | None = None
    prompt: str | None = None
    ended: float | None = None  # when the handler returned (finish may run a little later)


class Sink:
    """Access-log lines batched in memory and written at most every ``interval`` seconds (or
    on ``flush``): one write per batch instead of a logging record and a system call per
    request. A batch stays within ``PIPE_BUF`` (4 KiB), so that the workers of
    ``serve --workers`` sharing one stdout pipe never interleave inside a line."""

    __slots__ = ("_buffer", "_handle", "_interval", "_stream")

    def __init__(self, stream: BinaryIO, interval: float = 0.2) -> None:
        self._stream = stream
        self._interval = interval
        self._buffer = bytearray()
        self._handle: asyncio.TimerHandle | None = None

    def write(self, line: bytes) -> None:
        if len(self._buffer) + len(line) >= _ATOMIC:
            self.flush()
        self._buffer += line
        self._buffer += b"\n"
        if len(self._buffer) >= _ATOMIC:
            self.flush()  # a single long line (prompts logged): on its own
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._buffer:
            self._stream.write(self._buffer)
            self._stream.flush()
            self._buffer.clear()


class Observer:
    """Metrics, stats and the access log of one app. The access log goes to ``sink`` when
    one is set (``gearshift serve``: stdout), else to the ``gearshift.access`` logger."""

    def __init__(self, config: Config) -> None:
        self.metrics = Metrics(config)
        self.stats = Stats()
        self.sink: Sink | None = None
        self._log_prompts = config.server.log_prompts
        self._secrets = tuple(
            p.api_key.reveal() for p in config.providers.values() if p.api_key is not None
        ) + tuple(k.reveal() for k in config.proxy_keys)

    def finish(self, r: Record) -> None:
        self.metrics.inflight.dec()
        total = (r.ended or time.perf_counter()) - r.started
        overhead = max(0.0, total - r.upstream_s - r.client_s)
        m = self.metrics
        model = m.model_label(r.model) if r.model else "none"
        requested = m.requested_label(r.requested)
        provider = r.provider or "none"
        child = m.child
        child(m.requests, requested, model, provider, r.tier, str(r.status)).inc()
        m.overhead.observe(overhead)
        if r.decision_s is not None:
            m.decision.observe(r.decision_s)
        if r.attempts:
            upstream = provider if r.provider else r.attempts[-1].provider
            child(m.upstream, upstream).observe(r.upstream_s)
        if r.ttfb_s is not None and r.provider:
            child(m.ttfb, r.provider).observe(r.ttfb_s)
        fallbacks = len(r.attempts) - 1 if r.attempts else 0
        if fallbacks:
            for before, after in zip(r.attempts, r.attempts[1:], strict=False):
                to = m.model_label(after.model)
                child(m.fallbacks, m.model_label(before.model), to, before.outcome).inc()
        a = r.account
        if a is not None:
            child(m.cost, model).inc(a.cost_usd)
            child(m.baseline, requested).inc(a.baseline_usd)
            child(m.savings, requested, model).inc(a.savings_usd)
            for kind, n in a.tokens.by_kind():
                if n:
                    child(m.tokens, model, kind).inc(n)
        ok = r.status == 200
        self.stats.add(
            model=r.model if ok else None,
            tier=r.tier,
            ok=ok,
            cost_usd=a.cost_usd if a else 0.0,
            baseline_usd=a.baseline_usd if a else 0.0,
            estimated=a.tokens.estimated if a else False,
            fallbacks=fallbacks,
            overhead_s=overhead,
        )
        if self.sink is not None:
            self.sink.write(self._line(r, total, overhead))
        elif access_log.isEnabledFor(logging.INFO):
            access_log.info(self._line(r, total, overhead).decode())

    def _line(self, r: Record, total: float, overhead: float) -> bytes:
        a = r.account
        doc: dict[str, Any] = {
            "ts": time.time(),
            "request_id": r.request_id,
            "requested_model": r.requested,
            "model": r.model,
            "provider": r.provider,
            "tier": r.tier,
            "score": r.score,
            "stream": r.stream,
            "status": r.status,
            "prompt_tokens": a.tokens.prompt if a else None,
            "completion_tokens": a.tokens.completion if a else None,
            "cost_usd": a.cost_usd if a else None,
            "baseline_usd": a.baseline_usd if a else None,
            "estimated": a.tokens.estimated if a else None,
            "latency_ms": round(total * 1e3, 3),
            "overhead_ms": round(overhead * 1e3, 4),
            "attempts": [str(x) for x in r.attempts],
        }
        if self._log_prompts and r.prompt is not None:
            doc["prompt"] = scrub(r.prompt, *self._secrets, limit=4000)
        return orjson.dumps(doc)


__all__ = ["Observer", "Record", "Sink", "access_log"]
