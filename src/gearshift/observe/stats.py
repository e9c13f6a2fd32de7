"""Aggregates since start for ``GET /gearshift/stats``, and the HTML status page.

Counters only grow; the overhead percentiles come from the last ``SAMPLES`` requests (a
ring, constant memory). The page is one self-contained HTML document rendered on the
server: no scripts, no external assets, works offline.
"""

from __future__ import annotations

import html
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from gearshift.serve.exchange import Exchange

SAMPLES = 10_000


@dataclass(slots=True)
class _Row:
    requests: int = 0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0


@dataclass(slots=True)
class _KeyRow:
    requests: int = 0
    refused: int = 0  # 429: over its budget or rate limit
    cost_usd: float = 0.0
    baseline_usd: float = 0.0


@dataclass(slots=True)
class Stats:
    started: float = field(default_factory=time.time)
    requests: int = 0
    errors: int = 0
    estimated: int = 0
    cost_usd: float = 0.0
    baseline_usd: float = 0.0
    fallbacks: int = 0
    by_model: dict[str, _Row] = field(default_factory=dict)
    by_tier: dict[str, int] = field(default_factory=dict)
    by_key: dict[str, _KeyRow] = field(default_factory=dict)  # proxy keys with a policy
    overhead: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    def begin(self, ex: Exchange) -> None:
        pass

    def finish(self, ex: Exchange) -> None:
        """The stats sink: one finished request into the aggregates."""
        a = ex.account
        ok = ex.status == 200
        if ex.policy is not None and ex.key != "unnamed":
            row = self.by_key.get(ex.key)
            if row is None:
                row = self.by_key[ex.key] = _KeyRow()
            row.requests += 1
            row.refused += ex.status == 429
            if a is not None:
                row.cost_usd += a.cost_usd
                row.baseline_usd += a.baseline_usd
        self.add(
            model=ex.model if ok else None,
            tier=ex.tier,
            ok=ok,
            cost_usd=a.cost_usd if a else 0.0,
            baseline_usd=a.baseline_usd if a else 0.0,
            estimated=a.tokens.estimated if a else False,
            fallbacks=ex.fallbacks,
            overhead_s=ex.overhead_s(time.perf_counter()),
        )

    def add(
        self,
        *,
        model: str | None,
        tier: str,
        ok: bool,
        cost_usd: float,
        baseline_usd: float,
        estimated: bool,
        fallbacks: int,
        overhead_s: float,
    ) -> None:
        self.requests += 1
        self.overhead.append(overhead_s)
        self.fallbacks += fallbacks
        # What was spent counts even when the answer failed midway (a cut stream).
        self.cost_usd += cost_usd
        self.baseline_usd += baseline_usd
        self.estimated += estimated
        if not ok or model is None:
            self.errors += 1
            return
        row = self.by_model.get(model)
        if row is None:
            row = self.by_model[model] = _Row()
        row.requests += 1
        row.cost_usd += cost_usd
        row.baseline_usd += baseline_usd
        self.by_tier[tier] = self.by_tier.get(tier, 0) + 1

    def snapshot(self, breakers: dict[str, str], *, per_worker: bool = False) -> dict[str, Any]:
        """The aggregates; ``per_worker``: one of several ``serve --workers`` processes."""
        answered = self.requests - self.errors
        savings = self.baseline_usd - self.cost_usd
        samples = sorted(self.overhead)
        return {
            # With `serve --workers N` each worker keeps its own stats; /metrics sums them.
            "worker": os.getpid(),
            "scope": "this worker" if per_worker else "process",
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "uptime_s": round(time.time() - self.started, 1),
            "requests": self.requests,
            "answered": answered,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "cost_usd": round(self.cost_usd, 8),
            "baseline_usd": round(self.baseline_usd, 8),
            "savings_usd": round(savings, 8),
            "savings_pct": round(100 * savings / self.baseline_usd, 2) if self.baseline_usd else 0,
            "estimated_costs": self.estimated,
            "models": {
                name: {
                    "requests": row.requests,
                    "share": round(row.requests / answered, 4) if answered else 0,
                    "cost_usd": round(row.cost_usd, 8),
                    "baseline_usd": round(row.baseline_usd, 8),
                    "savings_usd": round(row.baseline_usd - row.cost_usd, 8),
                }
                for name, row in sorted(self.by_model.items(), key=lambda kv: -kv[1].requests)
            },
            "tiers": {
                tier: {"requests": n, "share": round(n / answered, 4) if answered else 0}
                for tier, n in self.by_tier.items()
            },
            "keys": {
                name: {
                    "requests": row.requests,
                    "refused": row.refused,
                    "cost_usd": round(row.cost_usd, 8),
                    "savings_usd": round(row.baseline_usd - row.cost_usd, 8),
                }
                for name, row in sorted(self.by_key.items())
            },
            "breakers": breakers,
            "overhead_ms": {
                "p50": round(_pct(samples, 0.50) * 1e3, 4),
                "p99": round(_pct(samples, 0.99) * 1e3, 4),
                "samples": len(samples),
            },
        }


def _pct(samples: list[float], q: float) -> float:
    return samples[min(len(samples) - 1, int(q * len(samples)))] if samples else 0.0


def page(snapshot: dict[str, Any], extra: str = "") -> str:
    """The status page for a browser: the snapshot's numbers as tables (``extra``: more
    sections, HTML, before the breakers)."""
    e = html.escape
    s = snapshot
    models = (
        "".join(
            f"<tr><td>{e(name)}</td><td>{m['requests']}</td><td>{100 * m['share']:.1f}%</td>"
            f"<td>${m['cost_usd']:.6f}</td><td>${m['baseline_usd']:.6f}</td>"
            f"<td>${m['savings_usd']:.6f}</td></tr>"
            for name, m in s["models"].items()
        )
        or '<tr><td colspan="6">no requests yet</td></tr>'
    )
    tiers = "".join(
        f"<tr><td>{e(t)}</td><td>{v['requests']}</td><td>{100 * v['share']:.1f}%</td></tr>"
        for t, v in s["tiers"].items()
    )
    breakers = (
        "".join(
            f"<tr><td>{e(name)}</td><td class='{e(state)}'>{e(state)}</td></tr>"
            for name, state in s["breakers"].items()
        )
        or '<tr><td colspan="2">no upstream called yet</td></tr>'
    )
    keys = ""
    if s.get("keys"):
        rows = "".join(
            f"<tr><td>{e(name)}</td><td>{k['requests']}</td><td>{k['refused']}</td>"
            f"<td>${k['cost_usd']:.6f}</td><td>${k['savings_usd']:.6f}</td></tr>"
            for name, k in s["keys"].items()
        )
        keys = (
            "<h2>Proxy keys</h2><table><tr><th>key</th><th>requests</th><th>refused</th>"
            f"<th>cost</th><th>saved</th></tr>{rows}</table>\n"
        )
    o = s["overhead_ms"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gearshift</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font:15px/1.4 system-ui,sans-serif;margin:2rem;color:#222;max-width:60rem}}
h1{{font-size:1.4rem}} table{{border-collapse:collapse;margin:0 0 1.5rem}}
td,th{{padding:.25rem .75rem;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}} .big{{font-size:2rem;font-weight:600}}
.open{{color:#b00}} .half_open{{color:#a60}} .closed{{color:#070}}
</style></head><body>
<h1>gearshift — since {e(s["since"])}</h1>
<p><span class="big">${s["savings_usd"]:.4f} saved ({s["savings_pct"]:.1f}%)</span><br>
spent ${s["cost_usd"]:.6f} instead of ${s["baseline_usd"]:.6f} ·
{s["answered"]} answered, {s["errors"]} errors, {s["fallbacks"]} fallbacks ·
overhead p50 {o["p50"]:.3f} ms, p99 {o["p99"]:.3f} ms</p>
<h2>Models</h2><table><tr><th>model</th><th>requests</th><th>share</th><th>cost</th>
<th>baseline</th><th>saved</th></tr>{models}</table>
<h2>Tiers</h2><table><tr><th>tier</th><th>requests</th><th>share</th></tr>{tiers}</table>
{keys}{extra}
<h2>Circuit breakers</h2><table><tr><th>deployment</th><th>state</th></tr>{breakers}</table>
<p>JSON: <a href="/gearshift/stats">/gearshift/stats</a> · Prometheus:
<a href="/metrics">/metrics</a></p>
</body></html>
"""


__all__ = ["Stats", "page"]
