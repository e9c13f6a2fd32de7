"""Reading a score as a risk, offline: the isotonic regression that maps held-out scores to
the rate of requests that needed the strong model, and the threshold that keeps a recall.
Pure Python; used by ``calibrate.with_risk``."""

from __future__ import annotations

from collections.abc import Sequence


def recall_threshold(
    scores: Sequence[float], labels: Sequence[int], weights: Sequence[float], recall: float
) -> float:
    """The highest threshold whose weighted recall of ``labels == 1`` (score >= threshold)
    reaches ``recall``."""
    positives = sorted(
        ((s, w) for s, y, w in zip(scores, labels, weights, strict=True) if y), reverse=True
    )
    total = sum(w for _, w in positives)
    if not total:
        return 1.0
    got = 0.0
    for s, w in positives:
        got += w
        if got >= recall * total - 1e-12:
            return s
    return 0.0


def widened(threshold: float, scores: Sequence[float], labels: Sequence[int]) -> float:
    """``threshold`` lowered past the rows needing the frontier just under it, to halfway to
    the highest other row below it: the recall that costs nothing on these rows, and a
    margin for rows to come (a refit from an application's traffic, where a property can
    separate the two cleanly)."""
    positives = [s for s, y in zip(scores, labels, strict=True) if y]
    if not positives:
        return threshold
    below = [s for s, y in zip(scores, labels, strict=True) if not y and s < threshold]
    if not below:
        return min(threshold, min(positives))
    highest = max(below)
    above = [s for s in scores if s > highest]  # rows needing the frontier, and the cut
    if not above or min(above) > threshold:
        return threshold
    return (highest + min(above)) / 2


def isotonic(
    scores: Sequence[float], labels: Sequence[int], weights: Sequence[float], knots: int = 24
) -> tuple[list[float], list[float]]:
    """Weighted isotonic regression (pool adjacent violators) of ``labels`` on ``scores``,
    as at most ``knots`` (score, risk) points: each pooled block's weighted mean score and
    its rate, rising; blocks are merged to equal weight when there are more than ``knots``."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    blocks: list[list[float]] = []  # [weight, weighted score sum, weighted label sum]
    for i in order:
        w = weights[i]
        blocks.append([w, w * scores[i], w * labels[i]])
        while len(blocks) > 1 and blocks[-2][2] / blocks[-2][0] >= blocks[-1][2] / blocks[-1][0]:
            w2, s2, y2 = blocks.pop()
            blocks[-1][0] += w2
            blocks[-1][1] += s2
            blocks[-1][2] += y2
    total = sum(b[0] for b in blocks)
    merged: list[list[float]] = []
    for b in blocks:  # equal-weight groups of neighbouring blocks (rates stay rising)
        if merged and merged[-1][0] < total / knots:
            merged[-1] = [m + v for m, v in zip(merged[-1], b, strict=True)]
        else:
            merged.append(list(b))
    xs: list[float] = []
    ys: list[float] = []
    for w, sw, yw in merged:
        x, y = round(sw / w, 6), round(yw / w, 6)
        if xs and x <= xs[-1]:
            continue
        xs.append(x)
        ys.append(max(y, ys[-1]) if ys else y)
    return xs, ys
