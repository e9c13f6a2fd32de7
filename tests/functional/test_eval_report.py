"""``gearshift eval``'s calibration table, cost/quality curve and savings at a recall
(``gearshift.offline.report``), on cases small enough to work out by hand."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson
import pytest
from labeled import write_labeled

from gearshift.cli import main
from gearshift.config import load
from gearshift.offline import calibrate as cal
from gearshift.offline.report import (
    Costs,
    TierPrice,
    curve,
    output_tokens,
    reliability,
    request_tokens,
    savings_at_recall,
    tier_costs,
)

# ---------------------------------------------------------------- reliability


def test_reliability_fixed_width_bins_ece_and_brier() -> None:
    risks = [0.05, 0.15, 0.15, 0.85, 0.95]
    labels = [0, 0, 1, 1, 1]
    rel = reliability(risks, labels, bins=10)
    assert rel["strategy"] == "fixed-width"  # 5 rows < 50 per bin
    assert rel["n"] == 5
    got = [(b["lo"], b["hi"], b["n"], b["mean_risk"], b["observed"]) for b in rel["bins"]]
    expected = [
        (0.0, 0.1, 1, 0.05, 0.0),
        (0.1, 0.2, 2, 0.15, 0.5),
        (0.8, 0.9, 1, 0.85, 1.0),
        (0.9, 1.0, 1, 0.95, 1.0),
    ]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g == pytest.approx(e)
    # ECE: 1/5 * 0.05 + 2/5 * 0.35 + 1/5 * 0.15 + 1/5 * 0.05
    assert rel["ece"] == pytest.approx(0.19)
    # Brier: (0.0025 + 0.0225 + 0.7225 + 0.0225 + 0.0025) / 5
    assert rel["brier"] == pytest.approx(0.1545)


def test_reliability_fixed_width_edges() -> None:
    # 0.3 belongs to [0.3, 0.4) (0.3 / 0.1 is 2.999… in floating point); 1.0 to the last bin.
    rel = reliability([0.3, 1.0, 0.0], [0, 1, 0], bins=10, strategy="fixed-width")
    assert [(b["lo"], b["n"]) for b in rel["bins"]] == [(0.0, 1), (0.3, 1), (0.9, 1)]
    assert rel["ece"] == pytest.approx(0.3 / 3)


def test_reliability_equal_count_bins_keep_ties_together() -> None:
    rel = reliability([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1], bins=2, strategy="equal-count")
    assert [b["n"] for b in rel["bins"]] == [2, 2]
    assert [b["mean_risk"] for b in rel["bins"]] == pytest.approx([0.15, 0.35])
    assert [b["observed"] for b in rel["bins"]] == pytest.approx([0.5, 0.5])
    assert rel["ece"] == pytest.approx(0.5 * 0.35 + 0.5 * 0.15)
    tied = reliability([0.1, 0.2, 0.2, 0.4], [0, 0, 1, 1], bins=2, strategy="equal-count")
    assert [b["n"] for b in tied["bins"]] == [3, 1]
    assert [(b["lo"], b["hi"]) for b in tied["bins"]] == [(0.1, 0.2), (0.4, 0.4)]


def test_reliability_auto_switches_to_equal_count_with_enough_rows() -> None:
    risks = [i / 1000 for i in range(1000)]
    labels = [1 if i % 4 == 0 else 0 for i in range(1000)]
    rel = reliability(risks, labels, bins=10)
    assert rel["strategy"] == "equal-count"
    assert [b["n"] for b in rel["bins"]] == [100] * 10
    assert reliability(risks[:499], labels[:499], bins=10)["strategy"] == "fixed-width"
    perfect = reliability([0.0, 0.0, 1.0, 1.0], [0, 0, 1, 1], bins=2)
    assert perfect["ece"] == 0.0
    assert perfect["brier"] == 0.0


# ---------------------------------------------------------------- costs, curve, savings


def _row(rid: str, tier: str, chars: int, max_tokens: int | None = None) -> cal.Example:
    body: dict[str, Any] = {"model": "auto", "messages": [{"role": "user", "content": "x" * chars}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return cal.example_from_row({"id": rid, "tier": tier, "request": body}, "tiny", 1)


# Four rows (USD per 1M: light 1 in / 4 out, frontier 10 in / 20 out; 400 characters are
# 100 tokens; 400 output tokens unless max_tokens says otherwise):
#   r1 score 0.9 frontier, 100 in, 400 out: light 100 + 1600 = 1700, frontier 1000 + 8000 = 9000
#   r2 score 0.6 light,    100 in, 100 out: light 100 +  400 =  500, frontier 1000 + 2000 = 3000
#   r3 score 0.4 frontier, 1000 in, 400 out: light 1000 + 1600 = 2600, frontier 10000 + 8000
#   r4 score 0.1 light,    100 in, 400 out: light 1700, frontier 9000
# (in millionths of a dollar). All frontier: 39000; all light: 6500.
EXAMPLES = [
    _row("r1", "frontier", 400),
    _row("r2", "light", 400, max_tokens=100),
    _row("r3", "frontier", 4000),
    _row("r4", "light", 400),
]
SCORES = [0.9, 0.6, 0.4, 0.1]
COSTS = Costs(TierPrice("light", "L", 1.0, 4.0), TierPrice("frontier", "F", 10.0, 20.0), 400)


def test_row_tokens_and_costs() -> None:
    assert [COSTS.tokens(e.body) for e in EXAMPLES] == [
        (100, 400),
        (100, 100),
        (1000, 400),
        (100, 400),
    ]
    assert COSTS.cost(EXAMPLES[0].body, COSTS.light) == pytest.approx(1700e-6)
    assert COSTS.cost(EXAMPLES[2].body, COSTS.frontier) == pytest.approx(18000e-6)
    assert output_tokens({"max_completion_tokens": 50, "max_tokens": 70}, 400) == 50
    assert output_tokens({"max_tokens": True}, 400) == 400
    tools = [{"type": "function", "function": {"name": "f"}}]
    assert request_tokens({"messages": [], "tools": tools}) > 0


def test_curve_endpoints_and_middle() -> None:
    rows = curve(SCORES, EXAMPLES, None, COSTS)
    assert [r["strong_share"] for r in rows] == pytest.approx([i / 20 for i in range(21)])
    first, middle, last = rows[0], rows[10], rows[-1]
    # Share 0: everything light, the bill is the all-light bill's share of all-frontier.
    assert math.isnan(first["threshold"])
    assert first["bill"] == pytest.approx(6500 / 39000)
    assert first["pgr"] == 0.0
    assert first["frontier_recall"] == 0.0
    assert first["light_recall"] == 1.0
    # Share 0.5: r1 and r2 go to the frontier model.
    assert middle["threshold"] == 0.6
    assert middle["bill"] == pytest.approx((9000 + 3000 + 2600 + 1700) / 39000)
    assert middle["frontier_recall"] == 0.5
    assert middle["light_recall"] == 0.5
    assert middle["pgr"] == pytest.approx(0.5)
    # Share 1: everything frontier.
    assert last["bill"] == pytest.approx(1.0)
    assert last["pgr"] == pytest.approx(1.0)
    assert last["frontier_recall"] == 1.0
    assert last["light_recall"] == 0.0
    bills = [r["bill"] for r in rows]
    assert bills == sorted(bills)
    assert all(math.isnan(r["bill"]) for r in curve(SCORES, EXAMPLES))


def test_savings_at_recall_by_hand() -> None:
    half = savings_at_recall(SCORES, EXAMPLES, 0.5, COSTS)
    assert half["threshold"] == 0.9  # r1 alone is half the frontier rows
    assert half["strong_share"] == 0.25
    assert half["frontier_recall"] == 0.5
    assert half["light_recall"] == 1.0
    assert half["accuracy"] == 0.75
    assert half["bill"] == pytest.approx((9000 + 500 + 2600 + 1700) / 39000)
    assert half["saving"] == pytest.approx(1 - 13800 / 39000)
    high = savings_at_recall(SCORES, EXAMPLES, 0.9, COSTS)
    assert high["threshold"] == 0.4  # r3 is needed too, and r2 (0.6) comes along
    assert high["strong_share"] == 0.75
    assert high["frontier_recall"] == 1.0
    assert high["light_recall"] == 0.5
    assert high["accuracy"] == 0.75
    assert high["saving"] == pytest.approx(1 - (9000 + 3000 + 18000 + 1700) / 39000)
    assert savings_at_recall(SCORES, EXAMPLES, 1.0, COSTS)["threshold"] == 0.4
    no_costs = savings_at_recall(SCORES, EXAMPLES, 0.9, None)
    assert no_costs["threshold"] == 0.4
    assert math.isnan(no_costs["saving"])
    with pytest.raises(ValueError, match="recall"):
        savings_at_recall(SCORES, EXAMPLES, 0.0, COSTS)


def test_tier_costs_picks_the_cheapest_plain_model_of_each_tier() -> None:
    config = load(None, environ={})  # the default catalog, nothing offered: all count
    costs = tier_costs(config)
    assert costs.expected_output_tokens == config.routing.expected_output_tokens

    def price(m: Any) -> float:
        return 1000 * m.spec.price_in + costs.expected_output_tokens * m.spec.price_out

    for chosen, tier in ((costs.light, "light"), (costs.frontier, "frontier")):
        model = config.models[chosen.model]
        assert model.tier == tier
        assert model.effort is None
        others = [m for m in config.models.values() if m.tier == tier and m.effort is None]
        assert price(model) == min(price(m) for m in others)
        assert (chosen.price_in, chosen.price_out) == (model.spec.price_in, model.spec.price_out)
    assert costs.frontier.price_out > costs.light.price_out


# ---------------------------------------------------------------- gearshift eval


def _labeled(tmp_path: Path) -> Path:
    return write_labeled(
        tmp_path,
        40,
        4,
        "Prove the lemma about group {i} rigorously, step by step, and check each case.",
    )


def test_gearshift_eval_json_has_calibration_curve_and_savings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _labeled(tmp_path)
    code = main(["eval", str(path), "--recall", "0.9", "--curve", "--json"])
    assert code == 0
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["datasets"]["mine"]["n"] == 40  # the old sections are still there

    for rel in (doc["reliability"]["all"], doc["reliability"]["datasets"]["mine"]):
        assert rel["n"] == 40
        assert sum(b["n"] for b in rel["bins"]) == 40
        assert 0 <= rel["ece"] <= 1
        assert 0 <= rel["brier"] <= 1
        observed = sum(b["n"] * b["observed"] for b in rel["bins"])
        assert observed == pytest.approx(10)  # 10 of 40 rows are frontier

    assert doc["costs"]["light"]["model"]
    assert doc["costs"]["frontier"]["price_out"] > doc["costs"]["light"]["price_out"]
    rows = doc["curve"]["mine"]
    assert len(rows) == 21
    assert rows[0]["strong_share"] == 0
    assert rows[-1]["strong_share"] == 1
    assert 0 < rows[0]["bill"] < 1
    assert rows[-1]["bill"] == pytest.approx(1.0)
    assert rows[-1]["pgr"] == pytest.approx(1.0)
    bills = [r["bill"] for r in rows]
    assert bills == sorted(bills)

    savings = doc["savings"]
    assert savings["recall"] == 0.9
    s = savings["datasets"]["mine"]
    assert s["frontier_recall"] >= 0.9
    assert 0 < s["saving"] < 1
    assert s["saving"] == pytest.approx(1 - s["bill"])
    assert s["strong_share"] >= 0.25 * 0.9
    # Routing never costs less than sending everything to the light model.
    assert s["bill"] >= rows[0]["bill"]


def test_gearshift_eval_text_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _labeled(tmp_path)
    assert main(["eval", str(path), "--recall", "0.95", "--curve"]) == 0
    out = capsys.readouterr().out
    assert "calibration over all rows" in out
    assert "ECE" in out
    assert "Brier" in out
    assert "cost/quality curve: mine" in out
    assert "savings at frontier recall >= 0.95" in out
    assert "costs: light = " in out

    # Plain eval prints the calibration table but neither curve nor savings.
    assert main(["eval", str(path)]) == 0
    out = capsys.readouterr().out
    assert "calibration over all rows" in out
    assert "cost/quality curve" not in out

    # No configuration: said, and the figures without costs still come.
    code = main(["eval", str(path), "--recall", "0.9", "--json", "--config", str(tmp_path / "no")])
    captured = capsys.readouterr()
    assert code == 0
    assert "savings skipped" in captured.err
    doc = orjson.loads(captured.out)
    assert doc["costs"] is None
    assert doc["savings"]["datasets"]["mine"]["saving"] is None  # NaN
    assert doc["savings"]["datasets"]["mine"]["frontier_recall"] >= 0.9

    assert main(["eval", str(path), "--recall", "1.5"]) == 2


def test_gearshift_eval_by_language(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {
            "id": "en",
            "tier": "frontier",
            "request": {
                "messages": [
                    {"role": "user", "content": "Prove that the square root of two is irrational."}
                ]
            },
        },
        {
            "id": "de",
            "tier": "light",
            "request": {
                "messages": [
                    {
                        "role": "user",
                        "content": "Bitte übersetze den folgenden Satz ins Englische: "
                        "Der Zug ist heute pünktlich und die Fahrgäste sind zufrieden.",
                    }
                ]
            },
        },
        {
            "id": "ja",
            "tier": "light",
            "language": "ja",
            "request": {"messages": [{"role": "user", "content": "Summarize"}]},
        },  # the row's own field wins
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    assert main(["eval", str(path), "--by-language", "--json"]) == 0
    langs = orjson.loads(capsys.readouterr().out)["languages"]["mixed"]
    assert set(langs) == {"en", "de", "ja"}
    assert langs["en"]["frontier_rows"] == 1
    assert langs["de"]["n"] == 1
    assert langs["de"]["strong_recall"] is None  # no frontier row: NaN, null in JSON
    assert main(["eval", str(path), "--by-language"]) == 0
    assert "by language" in capsys.readouterr().out
