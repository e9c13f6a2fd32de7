"""A score that means a risk: the table's calibration, thresholds stated as risks, presets,
leaning on uncertain requests, and the fitting side (isotonic map, recall threshold)."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from gearshift.offline.risk import isotonic, recall_threshold
from gearshift.routing.classify import (
    RiskMap,
    Rules,
    RulesError,
    RulesFile,
    Thresholds,
    decode_rules,
)
from gearshift.routing.tablefile import encode_rules

RISK = RiskMap(
    scores=[0.1, 0.5, 0.9],
    risks=[0.05, 0.3, 0.8],
    presets={"safe": 0.1, "balanced": 0.2, "thrifty": 0.4},
)


def _rules(risk: RiskMap = RISK, **spec: object) -> Rules:
    base = RulesFile(
        thresholds=Thresholds(standard=0.3, frontier=0.5),
        semantic={"invoice": 0.0, "total": 0.0, "please": 0.0, "date": 0.0, "extract": 0.0},
        semantic_weight=1.0,
        risk=risk,
    )
    return Rules(msgspec.structs.replace(base, **spec), "<test>")


def test_risk_interpolates_the_knots_and_clamps_outside() -> None:
    r = _rules()
    assert r.risk(0.0) == 0.05
    assert r.risk(1.0) == 0.8
    assert r.risk(0.3) == pytest.approx(0.175)
    assert r.risk(0.7) == pytest.approx(0.55)


def test_score_at_risk_inverts_risk() -> None:
    r = _rules()
    for risk in (0.06, 0.175, 0.3, 0.55, 0.79):
        assert r.risk(r.score_at_risk(risk)) == pytest.approx(risk)
    assert r.score_at_risk(0.01) == 0.0  # every score is at least that risky
    assert r.score_at_risk(0.9) == 1.0  # no score is


def test_without_a_map_the_score_is_the_risk() -> None:
    r = _rules(RiskMap())
    assert r.risk(0.42) == 0.42
    assert r.score_at_risk(0.42) == 0.42


def test_thresholds_as_risks() -> None:
    r = _rules().with_risk(0.3)
    assert r.spec.thresholds.frontier == pytest.approx(0.5)
    assert r.spec.thresholds.standard == pytest.approx(r.score_at_risk(0.15))
    # A smaller accepted risk sends more to the frontier.
    assert _rules().with_risk(0.1).spec.thresholds.frontier < r.spec.thresholds.frontier
    with pytest.raises(RulesError):
        _rules().with_risk(0.0)


def test_presets_are_the_tables_own() -> None:
    r = _rules()
    assert r.preset_risk("safe") == 0.1
    with pytest.raises(RulesError, match="no risk preset 'reckless'"):
        r.preset_risk("reckless")


def test_the_risk_map_round_trips_through_toml() -> None:
    spec = _rules().spec
    again = decode_rules(encode_rules(spec), "again")
    assert again.risk == spec.risk


@pytest.mark.parametrize(
    ("risk", "match"),
    [
        (RiskMap(scores=[0.1, 0.2], risks=[0.1]), "same length"),
        (RiskMap(scores=[0.2, 0.1], risks=[0.1, 0.2]), "scores rising"),
        (RiskMap(scores=[0.1, 0.2], risks=[0.3, 0.2]), "risks not falling"),
        (RiskMap(scores=[0.1], risks=[1.5]), r"in \[0, 1\]"),
        (RiskMap(presets={"safe": 0.0}), "presets.safe"),
        (RiskMap(lean=1.0), "lean"),
    ],
)
def test_a_bad_risk_map_is_refused(risk: RiskMap, match: str) -> None:
    with pytest.raises(RulesError, match=match):
        _rules(risk)


def _ask(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}]}


def test_an_uncertain_request_leans_to_the_safer_tier_and_says_so() -> None:
    # Score 0.45 (bias): standard by the table's thresholds (0.3 / 0.5); risk there 0.2625.
    r = _rules(bias=-0.2007)  # sigmoid(-0.2007) ~ 0.45
    known = r.decide(_ask("please extract the invoice total and date"))
    unknown = r.decide(_ask("bitte die Rechnungssumme und das Datum herausziehen"))
    assert not known.uncertain
    assert known.tier == "standard"
    assert unknown.uncertain
    assert unknown.score == known.score
    assert unknown.tier == "frontier"
    assert unknown.reasons[0] == "uncertain+"
    # Leaning off: the same tier as a known request.
    off = r.with_lean(0.0).decide(_ask("bitte die Rechnungssumme und das Datum herausziehen"))
    assert off.tier == "standard"
    assert off.uncertain


def test_a_short_request_is_never_uncertain() -> None:
    assert not _rules().decide(_ask("hola amigo")).uncertain


def test_decision_carries_the_risk() -> None:
    r = _rules(bias=0.0)  # score 0.5 -> risk 0.3
    assert r.decide(_ask("please extract the total")).risk == pytest.approx(0.3)


# ---------------------------------------------------------------- fitting side


def test_isotonic_pools_violators_and_rises() -> None:
    xs, ys = isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], [1, 1, 1, 1], knots=10)
    # (0.2: 1) and (0.3: 0) violate the order: pooled to 0.5 at their mean score 0.25.
    assert xs == [0.1, 0.25, 0.4]
    assert ys == [0.0, 0.5, 1.0]


def test_isotonic_merges_to_at_most_the_knots() -> None:
    scores = [i / 100 for i in range(100)]
    labels = [1 if i >= 50 else 0 for i in range(100)]
    xs, ys = isotonic(scores, labels, [1.0] * 100, knots=4)
    assert len(xs) <= 5
    assert all(a < b for a, b in itertools.pairwise(xs))
    assert all(a <= b for a, b in itertools.pairwise(ys))


def test_recall_threshold_is_the_highest_that_keeps_the_recall() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.2]
    labels = [1, 1, 0, 1, 1]
    weights = [1.0] * 5
    assert recall_threshold(scores, labels, weights, 0.5) == 0.8
    assert recall_threshold(scores, labels, weights, 0.75) == 0.6
    assert recall_threshold(scores, labels, weights, 1.0) == 0.2
    assert recall_threshold(scores, [0] * 5, weights, 0.9) == 1.0
