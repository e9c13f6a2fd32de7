"""The routing-quality measures of ``../shared/data/routing-dev/README.md``: AUC, PGR at a
strong-call share, APGR, and the figures at a threshold. Pure Python."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gearshift.offline.examples import Example


def auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """ROC-AUC (ties count half): P(score of a positive > score of a negative)."""
    if any(math.isnan(s) for s in scores):
        raise ValueError("a score is NaN")
    pairs = sorted(zip(scores, labels, strict=True))
    pos = sum(labels)
    neg = len(labels) - pos
    if not pos or not neg:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2.0  # 1-based average rank of the tie block
        rank_sum += avg_rank * sum(lbl for _, lbl in pairs[i:j])
        i = j
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def top_shares(scores: Sequence[float], strong_share: float) -> tuple[list[float], float]:
    """Each row's chance of going strong when the top ``strong_share`` do (rows tied with
    the cut share what is left of the calls evenly, so that the result does not depend on
    the rows' order), and the cut score (NaN when none goes)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    k = round(strong_share * len(order))
    share = [0.0] * len(order)
    if not k:
        return share, math.nan
    cut = scores[order[k - 1]]
    above = [i for i in order if scores[i] > cut]
    tied = [i for i in order if scores[i] == cut]
    for i in above:
        share[i] = 1.0
    for i in tied:
        share[i] = (k - len(above)) / len(tied)
    return share, cut


def pgr_at(scores: Sequence[float], examples: Sequence[Example], strong_share: float) -> float:
    """Share of the weak→strong gap recovered when the top ``strong_share`` go strong."""
    share, _ = top_shares(scores, strong_share)
    weak = sum(e.weak_score for e in examples)
    strong = sum(e.strong_score for e in examples)
    got = sum(
        e.weak_score + share[i] * (e.strong_score - e.weak_score) for i, e in enumerate(examples)
    )
    return (got - weak) / (strong - weak) if strong != weak else float("nan")


def apgr(scores: Sequence[float], examples: Sequence[Example]) -> float:
    """Mean PGR over strong-call shares 0, 0.1, …, 1 (RouteLLM's APGR; random ≈ 0.5)."""
    return sum(pgr_at(scores, examples, c / 10) for c in range(11)) / 11


def threshold_report(
    scores: Sequence[float],
    examples: Sequence[Example],
    threshold: float,
    routed: Sequence[bool] | None = None,
) -> dict[str, float]:
    """Quality recovered and strong-call share when ``score >= threshold`` goes strong
    (or, given ``routed``, when each row's own decision says so: held-out thresholds)."""
    if routed is None:
        routed = [s >= threshold for s in scores]
    weak = sum(e.weak_score for e in examples)
    strong = sum(e.strong_score for e in examples)
    got = sum(e.strong_score if r else e.weak_score for r, e in zip(routed, examples, strict=True))
    tp = sum(1 for r, e in zip(routed, examples, strict=True) if r and e.strong)
    tn = sum(1 for r, e in zip(routed, examples, strict=True) if not r and not e.strong)
    pos = sum(e.strong for e in examples)
    neg = len(examples) - pos
    return {
        "pgr": (got - weak) / (strong - weak) if strong != weak else float("nan"),
        "strong_share": sum(routed) / len(routed) if routed else float("nan"),
        "accuracy": (tp + tn) / len(examples) if examples else float("nan"),
        "strong_recall": tp / pos if pos else float("nan"),
        "weak_recall": tn / neg if neg else float("nan"),
    }
