"""What a score means: the table's risk map (a calibration from score to the probability that
the cheap model falls short), its presets, and the lean for uncertain requests; how they are
checked and written into a table's TOML. Read by ``classify.Rules``; fitted by
``offline/calibrate.py``."""

from __future__ import annotations

import itertools

import msgspec

from gearshift.routing.structs import RiskMap as RiskMap


class RulesError(Exception):
    """A rules table that cannot be used; the message names the file and the problem."""


PRESETS = ("safe", "balanced", "thrifty")


def encode_risk(r: RiskMap) -> list[str]:
    if r == RiskMap():
        return []
    out = [
        "",
        "# What a score means: the probability that the cheap model falls short, as knots of",
        "# a piecewise-linear map (isotonic regression on held-out scores); presets are risks.",
        "[risk]",
        "scores = [" + ", ".join(repr(v) for v in r.scores) + "]",
        "risks = [" + ", ".join(repr(v) for v in r.risks) + "]",
        f"standard = {r.standard!r}",
        f"lean = {r.lean!r}",
        f"min_words = {r.min_words}",
        f"min_known = {r.min_known!r}",
    ]
    if r.presets:
        out += ["", "[risk.presets]"] + [f"{_q(k)} = {v!r}" for k, v in r.presets.items()]
    return out


def check_risk(r: RiskMap, source: str) -> None:
    if len(r.scores) != len(r.risks):
        raise RulesError(f"{source}: risk.scores and risk.risks must have the same length")
    pairs = list(zip(r.scores, r.risks, strict=True))
    if any(not (0.0 <= v <= 1.0) for pair in pairs for v in pair) or any(
        b[0] <= a[0] or b[1] < a[1] for a, b in itertools.pairwise(pairs)
    ):
        raise RulesError(
            f"{source}: risk knots must lie in [0, 1], scores rising and risks not falling"
        )
    for name, value in r.presets.items():
        if not 0.0 < value <= 1.0:
            raise RulesError(f"{source}: risk.presets.{name} must be within (0, 1]")
    if not 0.0 < r.standard <= 1.0:
        raise RulesError(f"{source}: risk.standard must be within (0, 1]")
    if not 0.0 <= r.lean < 1.0 or not 0.0 <= r.min_known <= 1.0 or r.min_words < 1:
        raise RulesError(
            f"{source}: risk.lean must be within [0, 1), min_known within [0, 1], min_words >= 1"
        )


def _q(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return msgspec.json.encode(text).decode()
