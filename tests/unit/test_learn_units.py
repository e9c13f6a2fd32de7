"""The learning loop's pure parts: the judge's strict verdicts and how both orders combine,
the report's interval, the held-back split, the refit's refusal when the candidate is worse
elsewhere, and an outcome store of the first schema opened by this one."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import orjson
import pytest

from gearshift.learn.judge import Unparsed, Verdict, combine, judge_messages, parse_verdict
from gearshift.learn.outcomes import Outcome, SqliteOutcomes
from gearshift.learn.refit import compare, held_back
from gearshift.learn.report import wilson
from gearshift.learn.spec import LearnSpec
from gearshift.offline.calibrate import Example
from gearshift.offline.report import Costs, TierPrice
from gearshift.routing.classify import load_rules

GOOD = '{"acceptable_1": true, "acceptable_2": false, "better": "1", "reason": "2 is wrong"}'


def test_a_verdict_is_one_json_object_with_exactly_its_fields() -> None:
    assert parse_verdict(GOOD) == Verdict(True, False, "1", "2 is wrong")
    assert parse_verdict(f"```json\n{GOOD}\n```").acceptable_2 is False
    assert parse_verdict(f"  {GOOD}\n").better == "1"


@pytest.mark.parametrize(
    "reply",
    [
        "Answer 1 is better.",
        f"Here is my verdict: {GOOD}",
        GOOD + " Hope this helps",
        GOOD.replace("true", '"yes"'),  # a string is not a boolean
        GOOD.replace('"1"', '"first"'),
        GOOD.replace('"reason"', '"why"'),
        GOOD[:-1] + ', "confidence": 0.9}',  # a field the rubric did not ask for
        f"```python\n{GOOD}\n```",
        f"```json\n{GOOD}",
        "",
    ],
)
def test_anything_else_is_not_a_verdict(reply: str) -> None:
    with pytest.raises(Unparsed):
        parse_verdict(reply)


def test_both_orders_must_agree_on_the_cheaper_answer() -> None:
    ok_first = Verdict(True, True, "same", "")  # cheaper first: acceptable
    bad_second = Verdict(True, False, "1", "")  # cheaper second: not acceptable
    ok_second = Verdict(True, True, "same", "")
    bad_first = Verdict(False, True, "2", "")
    assert combine(ok_first, ok_second) == (True, "agree")
    assert combine(bad_first, bad_second) == (False, "agree")
    assert combine(ok_first, bad_second) == (None, "split")  # position bias: no label
    # Both answers fail in both orders: the frontier would not have helped, no label.
    assert combine(Verdict(False, False, "same", ""), Verdict(False, False, "same", "")) == (
        None, "both_fail",
    )  # fmt: skip


def test_the_judge_sees_the_request_and_both_answers_in_their_places() -> None:
    request = {"messages": [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Capital of Peru?"}]}  # fmt: skip
    system, user = judge_messages(request, "Lima.", "It is Lima, the capital.")
    assert "acceptable" in system["content"]
    assert "Do not judge by length" in system["content"]
    assert user["content"] == (
        "<request>\n[system]\nBe brief.\n\n[user]\nCapital of Peru?\n</request>\n"
        "<answer_1>\nLima.\n</answer_1>\n<answer_2>\nIt is Lima, the capital.\n</answer_2>"
    )


def test_wilson_interval() -> None:
    low, high = wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-3)
    assert high == pytest.approx(0.1744, abs=1e-3)
    assert wilson(0, 20)[0] == 0.0
    assert wilson(0, 20)[1] == pytest.approx(0.161, abs=1e-3)
    assert all(math.isnan(v) for v in wilson(0, 0))


def test_the_held_back_share_is_stable_and_close_to_asked() -> None:
    ids = [f"req-{i}" for i in range(4000)]
    held = [held_back(i, 0.3) for i in ids]
    assert abs(sum(held) / len(held) - 0.3) < 0.03
    assert held == [held_back(i, 0.3) for i in ids]


def _example(i: int, text: str, strong: int) -> Example:
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    return Example(f"r{i}", "store", f"r{i}", body, strong, float(1 - strong), 1.0, "c")


COSTS = Costs(TierPrice("light", "cheap", 0.1, 0.4), TierPrice("frontier", "big", 2.0, 8.0))


def test_a_candidate_that_loses_recall_where_the_current_table_had_it_is_refused() -> None:
    current = load_rules(None)
    # Rows the table in force sends to the frontier (long proofs) need it; short ones not.
    hard = "Prove that there are infinitely many primes, with a rigorous argument. " * 3
    held = [_example(i, hard, 1) for i in range(6)]
    held += [_example(10 + i, f"Say hi to {i}.", 0) for i in range(24)]
    assert sum(current.decide(e.body).tier == "frontier" for e in held[:6]) == 6
    # A "candidate" that never sends anything up: it saves more, but it lost the recall.
    lazy = current.with_thresholds(0.999999, 0.999999)
    verdict = compare(current, lazy, held, {}, LearnSpec(min_gain=0.0), COSTS)
    assert not verdict.accepted
    assert any("frontier recall as deployed 0.0%" in r for r in verdict.reasons)
    # The same ranking with thresholds that send everything up: it saves nothing as deployed.
    eager = current.with_thresholds(0.0, 0.0)
    verdict = compare(current, eager, held, {}, LearnSpec(min_gain=0.0), COSTS)
    assert not verdict.accepted
    assert any("as deployed the candidate saves 0.0%" in r for r in verdict.reasons)
    # A data file is checked on its deployed recall too, even where its AUC is undefined.
    files = {"hard_only": held[:6]}
    verdict = compare(current, lazy, held, files, LearnSpec(min_gain=0.0), COSTS)
    assert any(r.startswith("file:hard_only: frontier recall") for r in verdict.reasons)
    same = compare(current, current, held, {}, LearnSpec(), COSTS)
    assert not same.accepted
    assert any("must gain" in r for r in same.reasons)
    few = compare(current, current, held[:10], {}, LearnSpec(), COSTS)
    assert any("too few held-back rows" in r for r in few.reasons)


def test_a_store_of_the_first_schema_is_opened_and_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = [c for c in Outcome.__dataclass_fields__ if c not in
           ("redact", "judged_at", "judge_cost_usd", "verdict", "judge_failures",
            "cluster")]  # fmt: skip
    conn = sqlite3.connect(path)
    conn.execute(f"CREATE TABLE outcomes ({', '.join(old)}, size INTEGER)")
    values = ["r1", 1.0, "shadow", "k", "light", "0.1", "m", "light", "{}", "{}", "a", 0.0,
              1, "ref", "frontier", "b", 0.1, None, None, None, 10]  # fmt: skip
    conn.execute(f"INSERT INTO outcomes VALUES ({', '.join('?' for _ in values)})", values)
    digest = "sha256:" + "ab" * 32  # a row stored with redact = "hash"
    hashed = ["r2", 2.0, *values[2:10], digest, 0.0, 1, "ref", "frontier", digest, 0.1,
              None, None, None, 10]  # fmt: skip
    conn.execute(f"INSERT INTO outcomes VALUES ({', '.join('?' for _ in hashed)})", hashed)
    dropped = ["r3", 3.0, *values[2:10], None, 0.0, 1, "ref", "frontier", None, 0.1,
               None, None, None, 10]  # fmt: skip
    conn.execute(f"INSERT INTO outcomes VALUES ({', '.join('?' for _ in dropped)})", dropped)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    store = SqliteOutcomes.open(LearnSpec(store=str(path)))
    try:
        rows = store.call(lambda: list(store.outcomes()))
        assert [(o.redact, o.judge_cost_usd, o.verdict) for o in rows] == [
            ("none", 0.0, None), ("hash", 0.0, None), ("drop", 0.0, None),
        ]  # fmt: skip
        assert [o.request_id for o in store.call(store.to_judge)] == ["r1"]  # text only
    finally:
        store.close_now()


def test_a_score_from_stored_features_is_the_score_from_the_text() -> None:
    from gearshift.offline.calibrate import score_features

    rules = load_rules(None)
    bodies = [
        {"messages": [{"role": "user", "content": "Classify: 'great battery'."}]},
        {"messages": [{"role": "system", "content": "You are a careful tax adviser."},
                      {"role": "user", "content": "Prove that sqrt(2) is irrational."}]},
        {"messages": [{"role": "user", "content": "Write a Python function to merge intervals."},
                      {"role": "assistant", "content": "def merge(xs): ..."},
                      {"role": "user", "content": "Now make it handle 10^6 intervals fast."}]},
        {"messages": [{"role": "user", "content": "```js\nconst a = 1;\n```\nWhy is this slow?"}],
         "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"messages": [{"role": "user", "content": "Übersetze ins Englische: Guten Morgen!"}]},
    ]  # fmt: skip
    for body in bodies:
        assert score_features(rules, rules.features(body)[1]) == pytest.approx(
            rules.score(body)[0], abs=1e-9
        )


def test_one_holder_has_the_lease_until_it_expires(tmp_path: Path) -> None:
    now = [1000.0]
    store = SqliteOutcomes.open(LearnSpec(store=str(tmp_path / "o.sqlite3")), clock=lambda: now[0])
    try:
        assert store.call(store.lease, "judge", "a", 60.0)
        assert not store.call(store.lease, "judge", "b", 60.0)
        assert store.call(store.lease, "judge", "a", 60.0)  # renewed
        now[0] += 61
        assert store.call(store.lease, "judge", "b", 60.0)
        assert not store.call(store.lease, "judge", "a", 60.0)
    finally:
        store.close_now()


def test_a_widened_threshold_catches_for_free_what_the_recall_let_go() -> None:
    from gearshift.offline.risk import recall_threshold, widened

    scores = [0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9]
    labels = [0, 0, 0, 1, 1, 1, 1]
    cut = recall_threshold(scores, labels, [1.0] * 7, 0.75)
    assert cut == 0.7  # the highest that keeps 3 of 4: the row at 0.6 is let go
    assert widened(cut, scores, labels) == pytest.approx(0.45)  # halfway to the 0.3 below
    noisy = [0, 0, 1, 0, 1, 1, 1]  # a row not needing it just under the cut: halfway to it
    assert widened(recall_threshold(scores, noisy, [1.0] * 7, 0.75), scores, noisy) == (
        pytest.approx(0.65)
    )
    assert widened(0.7, [0.6, 0.7], [1, 1]) == 0.6  # nothing below: the lowest positive
    assert widened(1.0, [0.2, 0.4], [0, 0]) == 1.0  # nothing needs the frontier: unchanged


def test_the_outcome_store_evicts_the_oldest_rows_over_max_bytes(tmp_path: Path) -> None:
    now = [1000.0]
    spec = LearnSpec(store=str(tmp_path / "o.sqlite3"), max_bytes=1 << 20)
    store = SqliteOutcomes.open(spec, clock=lambda: now[0])
    big = "x" * 50_000
    try:
        for i in range(60):
            now[0] += 1
            store.call(store.record_now, Outcome(
                request_id=f"r{i}", at=now[0], kind="record", key="k", tier="light",
                score="0.1", model="m", model_tier="light", request={}, features={},
                answer=big, cost_usd=0.0,
            ))  # fmt: skip
        rows = store.call(lambda: [o.request_id for o in store.outcomes()])
    finally:
        store.close_now()
    assert 15 <= len(rows) <= 21  # about 1 MiB of 50 kB rows, the oldest gone first
    assert rows[-1] == "r59"
    assert "r0" not in rows


def test_processes_opening_one_store_at_once_all_open_it(tmp_path: Path) -> None:
    """Workers open the store together at start-up: created (or upgraded) once, whole."""
    import subprocess
    import sys

    path = tmp_path / "shared.sqlite3"
    code = (
        "from gearshift.learn.outcomes import SqliteOutcomes\n"
        "from gearshift.learn.spec import LearnSpec\n"
        f"SqliteOutcomes.open(LearnSpec(store={str(path)!r})).close_now()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
             for _ in range(6)]  # fmt: skip
    errors = [p.communicate(timeout=60)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors


def test_a_streamed_tool_call_is_stored_as_the_whole_one_is() -> None:
    from gearshift.learn.shadow import answer_text, stream_text

    whole = {"choices": [{"message": {"content": None, "tool_calls": [{"id": "c1",
             "type": "function", "function": {"name": "get_weather",
             "arguments": '{"city": "Oslo"}'}}]}}]}  # fmt: skip
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{"index": 0,
         "id": "c1", "type": "function", "function": {"name": "get_weather",
         "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
         "function": {"arguments": '{"city": '}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
         "function": {"arguments": '"Oslo"}'}}]}}]},
    ]  # fmt: skip
    data = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    assert stream_text(data) == answer_text(orjson.dumps(whole))
    assert "get_weather" in stream_text(data)
