"""What the outcome store says, per task cluster (``gearshift report`` and the status page).

- **A task cluster** is the hash of the opening of the request's system prompt, digits
  masked (one application task: one system prompt, whatever it fills in), or, for a request
  without one, its strongest feature under the current
  rule table (``feature:w:invoice``, ``feature:code_fence``).
- **Per cluster**: its rows and share of the recorded traffic; for the shadowed ones served
  by the cheaper model, what they cost against what the reference model cost for the same
  requests (the saving); of the labeled ones (the application's feedback, or the judge
  agreeing in both orders), the share where the cheaper answer did not suffice (the
  **quality gap**) with a 95% Wilson interval; split verdicts counted apart.
- **Lost requests**: the rows where the cheaper answer did not suffice, newest first, with
  the judge's (or the application's) reason, to read.
"""

from __future__ import annotations

import hashlib
import html
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from gearshift.inbound.chat import content_text
from gearshift.learn.outcomes import Outcome
from gearshift.routing.classify import Rules

Z95 = 1.959964
SYSTEM_CHARS = 200  # of the system prompt that name its cluster
_DIGITS = re.compile(r"\d+")
LOST_SHOWN = 20
EXCERPT = 160


def system_text(request: dict[str, Any]) -> str:
    messages = request.get("messages") or []
    parts = [
        content_text(m.get("content"))[0]
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    ]
    return "\n".join(p for p in parts if p)


def last_user_text(request: dict[str, Any]) -> str:
    for m in reversed(request.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))[0]
    return ""


def strongest_feature(features: dict[str, float], rules: Rules) -> str | None:
    """The feature that moves the score most for this request (by |weight * value|)."""
    spec = rules.spec
    patterns = {"re:" + p.id: p.weight for p in spec.patterns}
    best, name = 0.0, None
    for key, value in features.items():
        if key in spec.counters:
            weight = spec.counters[key]
        elif key in patterns:
            weight = patterns[key]
        elif key.startswith("w:"):
            weight = spec.lexicon.get(key[2:], 0.0)
        elif key.startswith("h:"):
            weight = spec.lead_lexicon.get(key[2:], 0.0)
        else:
            continue
        if abs(weight * value) > best:
            best, name = abs(weight * value), key
    return name


def cluster_of(request: dict[str, Any], features: dict[str, float], rules: Rules) -> str:
    """``features``: those stored with a redacted row; without them, read from the text."""
    system = system_text(request)
    if system:
        # A templated prompt (a date, a user's name or number in it) is still one task: the
        # opening, digits masked.
        opening = _DIGITS.sub("#", system[:SYSTEM_CHARS])
        return "system:" + hashlib.sha256(opening.encode()).hexdigest()[:10]
    if not features:
        features = rules.features(request)[1]
    return "feature:" + (strongest_feature(features, rules) or "none")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``k / n`` (NaN, NaN for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


@dataclass(slots=True)
class Cluster:
    name: str
    example: str = ""
    rows: int = 0
    shadowed: int = 0
    cost_usd: float = 0.0  # what the cheaper model cost on shadowed rows
    reference_cost_usd: float = 0.0  # what the reference model cost on the same rows
    labeled: int = 0
    lost: int = 0
    split: int = 0
    feedback: int = 0

    def doc(self, total: int) -> dict[str, Any]:
        low, high = wilson(self.lost, self.labeled)
        saving = self.reference_cost_usd - self.cost_usd
        return {
            "cluster": self.name, "example": self.example, "rows": self.rows,
            "share": self.rows / total if total else math.nan, "shadowed": self.shadowed,
            "cost_usd": round(self.cost_usd, 8),
            "reference_cost_usd": round(self.reference_cost_usd, 8),
            "savings_usd": round(saving, 8),
            "saving_share": saving / self.reference_cost_usd if self.reference_cost_usd
            else math.nan,
            "labeled": self.labeled, "lost": self.lost,
            "gap": self.lost / self.labeled if self.labeled else math.nan,
            "gap_low": low, "gap_high": high, "split": self.split, "feedback": self.feedback,
        }  # fmt: skip


@dataclass(slots=True)
class Report:
    clusters: dict[str, Cluster] = field(default_factory=dict)
    lost: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    first_at: float = math.inf
    last_at: float = -math.inf
    shadow_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0

    def doc(self) -> dict[str, Any]:
        every = Cluster("all")
        for c in self.clusters.values():
            for name in ("rows", "shadowed", "labeled", "lost", "split", "feedback"):
                setattr(every, name, getattr(every, name) + getattr(c, name))
            every.cost_usd += c.cost_usd
            every.reference_cost_usd += c.reference_cost_usd
        ordered = sorted(self.clusters.values(), key=lambda c: (-c.rows, c.name))
        return {
            "rows": self.rows,
            "since": None if self.rows == 0 else _iso(self.first_at),
            "until": None if self.rows == 0 else _iso(self.last_at),
            "shadow_cost_usd": round(self.shadow_cost_usd, 8),
            "judge_cost_usd": round(self.judge_cost_usd, 8),
            "all": every.doc(self.rows),
            "clusters": [c.doc(self.rows) for c in ordered],
            "lost": sorted(self.lost, key=lambda r: -r["at"])[:LOST_SHOWN],
            "lost_total": len(self.lost),
        }


def build(outcomes: Iterable[Outcome], rules: Rules) -> Report:
    """The report over ``outcomes`` (the store's rows), clustered under ``rules``."""
    report = Report()
    for o in outcomes:
        request = o.request if isinstance(o.request, dict) else {}
        name = o.cluster or cluster_of(request, o.features, rules)
        c = report.clusters.get(name)
        if c is None:
            c = report.clusters[name] = Cluster(name, _example(request, o.redact))
        c.rows += 1
        report.rows += 1
        report.first_at = min(report.first_at, o.at)
        report.last_at = max(report.last_at, o.at)
        report.judge_cost_usd += o.judge_cost_usd or 0.0
        if o.kind == "shadow" and o.reference_cost_usd is not None:
            report.shadow_cost_usd += o.reference_cost_usd
            if o.served_is_weak:
                c.shadowed += 1
                c.cost_usd += o.cost_usd
                c.reference_cost_usd += o.reference_cost_usd
        if o.verdict == "split" and o.weak_suffices is None:
            c.split += 1
        if o.weak_suffices is None:
            continue
        c.labeled += 1
        c.feedback += o.label_source == "feedback"
        if not o.weak_suffices:
            c.lost += 1
            report.lost.append({
                "request_id": o.request_id, "at": o.at, "cluster": name, "key": o.key,
                "model": o.model if o.served_is_weak else o.reference,
                "reference": o.reference if o.served_is_weak else o.model,
                "prompt": _excerpt(last_user_text(request), o.redact),
                "source": o.label_source, "reason": o.reason,
            })  # fmt: skip
    return report


def _excerpt(text: str, redact: str) -> str:
    if redact != "none":
        return f"(redacted: {redact})"
    text = " ".join(text.split())
    return text if len(text) <= EXCERPT else text[: EXCERPT - 1] + "…"


def _example(request: dict[str, Any], redact: str) -> str:
    return _excerpt(system_text(request) or last_user_text(request), redact)


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f}%"


def _gap(row: dict[str, Any]) -> str:
    if not row["labeled"]:
        return "-"
    return f"{_pct(row['gap'])} [{_pct(row['gap_low'])}, {_pct(row['gap_high'])}]"


def write_text(doc: dict[str, Any], out: TextIO) -> None:
    out.write(
        f"outcome store: {doc['rows']} rows"
        + (f" from {doc['since']} to {doc['until']}" if doc["rows"] else "")
        + f"; shadow calls cost ${doc['shadow_cost_usd']:.4f}, "
        f"judging ${doc['judge_cost_usd']:.4f}\n"
        "quality gap: share of labeled rows where the cheaper answer did not suffice, with its "
        "95% interval; saving: what the cheaper model saved against the reference on the "
        "shadowed rows\n\n"
    )
    cols = f"{'cluster':<26}{'rows':>7}{'share':>8}{'saving':>9}{'labeled':>9}{'lost':>6}"
    out.write(cols + f"{'split':>7}  {'quality gap [95% CI]':<26}example\n")
    for row in [*doc["clusters"], doc["all"]]:
        out.write(
            f"{row['cluster'][:25]:<26}{row['rows']:>7}{_pct(row['share']):>8}"
            f"{_pct(row['saving_share']):>9}{row['labeled']:>9}{row['lost']:>6}"
            f"{row['split']:>7}  {_gap(row):<26}{row['example'][:60]}\n"
        )
    if doc["lost"]:
        out.write(f"\nwhere the cheaper answer lost ({doc['lost_total']}; newest first)\n")
        for r in doc["lost"]:
            out.write(
                f"- {r['request_id']} [{r['cluster']}] {r['model']} vs {r['reference']} "
                f"({r['source']}): {r['prompt']}\n    {r['reason']}\n"
            )


def html_section(doc: dict[str, Any]) -> str:
    """The status page's section (shown with ``[learn]``): figures and request ids only."""
    e = html.escape  # (no request text here: any proxy key may read this page)
    rows = "".join(
        f"<tr><td>{e(r['cluster'])}</td><td>{r['rows']}</td>"
        f"<td>{_pct(r['share'])}</td><td>{_pct(r['saving_share'])}</td><td>{r['labeled']}</td>"
        f"<td>{r['lost']}</td><td>{e(_gap(r))}</td></tr>"
        for r in [*doc["clusters"][:20], doc["all"]]
    )
    lost = "".join(
        f"<li><code>{e(r['request_id'])}</code> {e(r['cluster'])} ({e(str(r['source']))})</li>"
        for r in doc["lost"][:10]
    )
    return (
        f"<h2>Shadow mode</h2><p>The {doc['rows']} most recent recorded requests; shadow "
        f"calls ${doc['shadow_cost_usd']:.4f}, judging ${doc['judge_cost_usd']:.4f}. "
        "Their texts: <code>gearshift report</code>.</p>"
        "<table><tr><th>task cluster</th><th>rows</th><th>share</th><th>saving</th>"
        "<th>labeled</th><th>lost</th><th>quality gap [95% CI]</th></tr>"
        f"{rows}</table>"
        + (f"<h3>Where the cheaper answer lost</h3><ul>{lost}</ul>" if lost else "")
    )


__all__ = ["Report", "build", "cluster_of", "html_section", "wilson", "write_text"]
