"""Replaying requests offline: the decision and plan for each, and what routing would save.

Used by ``gearshift route`` (one request) and ``gearshift classify`` (a JSONL log, one
result line per input line, in order). No request is sent anywhere.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from gearshift.errors import GearshiftError
from gearshift.inbound.chat import parse_chat
from gearshift.routing.policy import Policy, estimate_cost, plan


def decide_one(raw: bytes, policy: Policy, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The routing decision for one request body, as plain data."""
    request = parse_chat(raw)
    p = plan(request, policy, headers)
    d = p.decision
    tokens_out = p.output_tokens
    return {
        "requested": p.requested,
        "score": None if d is None else d.score,
        "risk": None if d is None or d.hinted else d.risk,
        "uncertain": None if d is None or d.hinted else d.uncertain,
        "tier": p.tier,
        "model": p.targets[0].name,
        "effort": p.targets[0].effort,
        "provider": p.targets[0].provider.name,
        "est_cost_usd": round(p.est_cost_usd, 8),
        "baseline_cost_usd": round(p.baseline_cost_usd, 8),
        "prompt_tokens": p.prompt_tokens,
        "reasons": list(d.reasons) if d else [p.reason],
        "plan": [
            {
                "model": m.name,
                "effort": m.effort,
                "tier": m.tier,
                "est_cost_usd": round(estimate_cost(m, p.prompt_tokens, tokens_out), 8),
            }
            for m in p.targets
        ],
    }


def classify_lines(lines: Iterable[bytes], policy: Policy) -> Iterator[dict[str, Any]]:
    """One result per input line, in order; a bad line gives ``{"error": …}``, not a stop."""
    for n, line in enumerate(lines, 1):
        if not line.strip():
            yield {"line": n, "error": "empty line"}
            continue
        try:
            result = decide_one(line, policy)
        except GearshiftError as exc:
            yield {"line": n, "error": exc.message}
            continue
        result.pop("plan")
        yield {"line": n, **result}


def summarize(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Tier and model shares, and the projected cost with and without routing."""
    tiers: Counter[str] = Counter()
    models: Counter[str] = Counter()
    routed = baseline = 0.0
    errors = 0
    for r in results:
        if "error" in r:
            errors += 1
            continue
        tiers[r["tier"]] += 1
        models[r["model"]] += 1
        routed += r["est_cost_usd"]
        baseline += r["baseline_cost_usd"]
    n = sum(tiers.values())
    return {
        "requests": n,
        "errors": errors,
        "tiers": {t: {"count": c, "share": round(c / n, 4)} for t, c in tiers.most_common()},
        "models": {m: {"count": c, "share": round(c / n, 4)} for m, c in models.most_common()},
        "cost_without_routing_usd": round(baseline, 6),
        "cost_with_routing_usd": round(routed, 6),
        "savings_usd": round(baseline - routed, 6),
        "savings_pct": round(100 * (baseline - routed) / baseline, 2) if baseline else 0.0,
    }


def dumps(doc: Any) -> str:
    return orjson.dumps(doc).decode()
