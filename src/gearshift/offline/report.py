"""What ``gearshift eval`` prints beyond AUC and APGR: calibration, the cost/quality curve,
and the savings at a chosen frontier recall. Pure Python (no numpy).

- ``reliability``: the table's predicted risk (``Rules.risk``) against what happened, in
  bins, with the expected calibration error (ECE) and the Brier score.
- ``curve``: for strong-call shares 0, 0.05, …, 1 (the top share by score goes to the
  frontier model), the PGR, the recall of each class, and the bill as a share of sending
  everything to the frontier model.
- ``savings_at_recall``: the highest score threshold that still sends at least ``recall`` of
  the rows needing the strong model to it, and what that saves.

Costs are a two-tier view: a row costs what the cheapest catalog model of the light tier
charges for it below the threshold, the cheapest of the frontier tier's above it
(``tier_costs``). Input tokens are estimated from the request's characters
(``estimate_chars``: about four a token in English); output tokens are the request's
``max_completion_tokens`` / ``max_tokens`` when set, else the config's
``routing.expected_output_tokens`` (400 by default). Reasoning tokens and cache discounts are
left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson

from gearshift.config import Config
from gearshift.inbound.chat import content_text
from gearshift.offline import calibrate as cal
from gearshift.offline.risk import recall_threshold
from gearshift.routing.classify import Rules
from gearshift.routing.tokens import estimate_chars

NAN = float("nan")

# Fewer rows than this per bin and equal-count bins are replaced by fixed-width ones.
MIN_ROWS_PER_BIN = 50
# The "typical request" by which the cheapest model of a tier is chosen: input tokens (the
# output is the config's expected_output_tokens).
TYPICAL_INPUT_TOKENS = 1000


# ---------------------------------------------------------------- calibration


class ReliabilityBin(TypedDict):
    lo: float  # the lowest predicted risk in the bin (fixed-width: the bin's lower edge)
    hi: float  # the highest (fixed-width: the upper edge)
    n: int
    mean_risk: float  # mean predicted risk
    observed: float  # share of rows that needed the strong model


class Reliability(TypedDict):
    strategy: str  # "equal-count" or "fixed-width"
    n: int
    bins: list[ReliabilityBin]
    ece: float  # sum over bins of n_b / n * |mean_risk_b - observed_b|
    brier: float  # mean of (risk - label)^2


def reliability(
    risks: Sequence[float],
    labels: Sequence[int],
    bins: int = 10,
    strategy: str = "auto",
) -> Reliability:
    """Predicted risk against the observed share needing the strong model, in ``bins`` bins.

    ``strategy``: ``equal-count`` (rows sorted by risk, cut into ``bins`` groups of about
    equal size; rows of equal risk stay in one bin, so a bin can be larger and there can be
    fewer bins), ``fixed-width`` (``[0, 1/bins)``, …, ``[1 - 1/bins, 1]``; empty bins left
    out), or ``auto``: equal-count when every bin would hold at least ``MIN_ROWS_PER_BIN``
    rows, fixed-width otherwise (few rows: readable edges beat equal sizes, and each bin
    shows its ``n``). ECE weighs each bin by its rows; the Brier score is over rows, whatever
    the bins."""
    if len(risks) != len(labels):
        raise ValueError("risks and labels differ in length")
    if bins < 1:
        raise ValueError("bins must be at least 1")
    n = len(risks)
    if strategy == "auto":
        strategy = "equal-count" if n >= MIN_ROWS_PER_BIN * bins else "fixed-width"
    if strategy not in ("equal-count", "fixed-width"):
        raise ValueError(f"unknown strategy {strategy!r}")
    pairs = sorted(zip(risks, labels, strict=True))
    groups: list[tuple[float, float, list[tuple[float, int]]]] = []
    if strategy == "equal-count":
        start = 0
        for b in range(bins):
            end = max(start, round((b + 1) * n / bins))
            while 0 < end < n and pairs[end][0] == pairs[end - 1][0]:
                end += 1  # ties stay together
            if end > start:
                chunk = pairs[start:end]
                groups.append((chunk[0][0], chunk[-1][0], chunk))
            start = end
    else:
        by_bin: dict[int, list[tuple[float, int]]] = {}
        for r, y in pairs:
            # (the nudge keeps 0.3 in [0.3, 0.4) despite 0.3 * 10 rounding either way)
            b = min(bins - 1, max(0, math.floor(r * bins + 1e-9)))
            by_bin.setdefault(b, []).append((r, y))
        for b in sorted(by_bin):
            groups.append((round(b / bins, 10), round((b + 1) / bins, 10), by_bin[b]))
    out_bins: list[ReliabilityBin] = []
    ece = 0.0
    for lo, hi, chunk in groups:
        mean_risk = sum(r for r, _ in chunk) / len(chunk)
        observed = sum(y for _, y in chunk) / len(chunk)
        ece += len(chunk) / n * abs(mean_risk - observed)
        out_bins.append(
            {"lo": lo, "hi": hi, "n": len(chunk), "mean_risk": mean_risk, "observed": observed}
        )
    brier = sum((r - y) ** 2 for r, y in pairs) / n if n else NAN
    return {
        "strategy": strategy,
        "n": n,
        "bins": out_bins,
        "ece": ece if n else NAN,
        "brier": brier,
    }


# ---------------------------------------------------------------- costs


@dataclass(frozen=True, slots=True)
class TierPrice:
    tier: str
    model: str
    price_in: float  # USD per 1M input tokens
    price_out: float  # USD per 1M output tokens


@dataclass(frozen=True, slots=True)
class Costs:
    """What a row costs at the light and the frontier tier."""

    light: TierPrice
    frontier: TierPrice
    expected_output_tokens: int = 400  # when the request sets no max_tokens

    def tokens(self, body: Mapping[str, Any]) -> tuple[int, int]:
        """(input tokens estimated from the characters, output tokens assumed)."""
        return request_tokens(body), output_tokens(body, self.expected_output_tokens)

    def cost(self, body: Mapping[str, Any], price: TierPrice) -> float:
        tin, tout = self.tokens(body)
        return (tin * price.price_in + tout * price.price_out) / 1e6

    def describe(self) -> str:
        def one(p: TierPrice) -> str:
            return f"{p.tier} = {p.model} (${p.price_in:g} in / ${p.price_out:g} out per 1M)"

        return (
            f"costs: {one(self.light)}, {one(self.frontier)}; input tokens estimated from the "
            f"characters, output = the request's max_tokens, else "
            f"{self.expected_output_tokens} tokens"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "light": {
                "model": self.light.model,
                "price_in": self.light.price_in,
                "price_out": self.light.price_out,
            },
            "frontier": {
                "model": self.frontier.model,
                "price_in": self.frontier.price_in,
                "price_out": self.frontier.price_out,
            },
            "expected_output_tokens": self.expected_output_tokens,
            "input_tokens": "estimate_chars(characters of the messages and tools)",
        }


def request_tokens(body: Mapping[str, Any]) -> int:
    """Input tokens, estimated from the messages' text and the tool schemas."""
    texts: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                texts.append(content_text(message.get("content"))[0])
    tools = body.get("tools")
    if tools:
        texts.append(orjson.dumps(tools).decode())
    text = "\n".join(texts)
    return estimate_chars(len(text), ascii=text.isascii())


def output_tokens(body: Mapping[str, Any], expected: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return expected


def tier_costs(config: Config) -> Costs:
    """The cheapest model of the lowest tier (``light``) and of the highest (``frontier``)
    in ``config``, by price for a typical request (``TYPICAL_INPUT_TOKENS`` in, the config's
    ``expected_output_tokens`` out), ignoring effort variants. Models that can be served
    are preferred; when none of a tier can (no API keys: the default catalog as shipped),
    every catalog model of it counts. Ties go to the first in catalog order."""
    tiers = config.routing.tiers
    expected = config.routing.expected_output_tokens

    def cheapest(tier: str) -> TierPrice:
        models = [m for m in config.models.values() if m.tier == tier and m.effort is None]
        offered = [m for m in models if m.offered]
        pool = offered or models
        if not pool:
            raise ValueError(f"{config.source}: no model of tier {tier!r}")
        best = min(
            pool,
            key=lambda m: TYPICAL_INPUT_TOKENS * m.spec.price_in + expected * m.spec.price_out,
        )
        return TierPrice(tier, best.name, best.spec.price_in, best.spec.price_out)

    return Costs(cheapest(tiers[0]), cheapest(tiers[-1]), expected)


# ---------------------------------------------------------------- cost / quality


def _ratio(num: float, den: float) -> float:
    return num / den if den else NAN


def curve(
    scores: Sequence[float],
    examples: Sequence[cal.Example],
    rules: Rules | None = None,
    costs: Costs | None = None,
    steps: int = 20,
) -> list[dict[str, float]]:
    """The cost/quality curve: for strong-call shares 0, 1/steps, …, 1 (the top share by
    score goes to the frontier model): the score threshold (NaN at share 0), its risk (with
    ``rules``), PGR, frontier recall (share of the rows needing the strong model sent to
    it), light recall (share of the others kept light), and with ``costs`` the bill as a
    share of the all-frontier bill (at share 0: what the all-light bill is of it)."""
    labels = [e.strong for e in examples]
    pos = sum(labels)
    neg = len(labels) - pos
    if costs is not None:
        light_cost = [costs.cost(e.body, costs.light) for e in examples]
        frontier_cost = [costs.cost(e.body, costs.frontier) for e in examples]
        all_frontier = sum(frontier_cost)
    out = []
    for step in range(steps + 1):
        c = step / steps
        share, cut = cal.top_shares(scores, c)
        row = {
            "strong_share": c,
            "threshold": cut,
            "risk": rules.risk(cut) if rules is not None and not math.isnan(cut) else NAN,
            "pgr": cal.pgr_at(scores, examples, c),
            "frontier_recall": _ratio(sum(s for s, y in zip(share, labels, strict=True) if y), pos),
            "light_recall": _ratio(
                sum(1 - s for s, y in zip(share, labels, strict=True) if not y), neg
            ),
            "bill": NAN,
        }
        if costs is not None:
            bill = sum(
                s * f + (1 - s) * lc
                for s, f, lc in zip(share, frontier_cost, light_cost, strict=True)
            )
            row["bill"] = _ratio(bill, all_frontier)
        out.append(row)
    return out


def savings_at_recall(
    scores: Sequence[float],
    examples: Sequence[cal.Example],
    recall: float,
    costs: Costs | None,
    rules: Rules | None = None,
) -> dict[str, float]:
    """At the highest score threshold whose frontier recall (share of the ``strong == 1``
    rows scoring at or above it) is at least ``recall``: the threshold, its risk (with
    ``rules``), strong-call share, frontier and light recall, accuracy, PGR, and with
    ``costs`` the bill as a share of the all-frontier bill and the saving, 1 - that share
    (frontier model at or above the threshold, light model below). No row needing the
    strong model: the threshold is 1.0."""
    if not 0.0 < recall <= 1.0:
        raise ValueError("recall must be within (0, 1]")
    labels = [e.strong for e in examples]
    threshold = recall_threshold(scores, labels, [1.0] * len(labels), recall)
    figures = cal.threshold_report(scores, examples, threshold)
    out = {
        "recall_target": recall,
        "threshold": threshold,
        "risk": rules.risk(threshold) if rules is not None else NAN,
        "strong_share": figures["strong_share"],
        "frontier_recall": figures["strong_recall"],
        "light_recall": figures["weak_recall"],
        "accuracy": figures["accuracy"],
        "pgr": figures["pgr"],
        "bill": NAN,
        "saving": NAN,
    }
    if costs is not None:
        routed = 0.0
        all_frontier = 0.0
        for s, e in zip(scores, examples, strict=True):
            frontier = costs.cost(e.body, costs.frontier)
            all_frontier += frontier
            routed += frontier if s >= threshold else costs.cost(e.body, costs.light)
        out["bill"] = _ratio(routed, all_frontier)
        out["saving"] = 1.0 - out["bill"]
    return out
