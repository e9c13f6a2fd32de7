from __future__ import annotations

import pytest

from gearshift.offline import calibrate as cal
from gearshift.routing.classify import load_rules


def _ex(
    strong: int, weak_score: float, strong_score: float, ds: str = "d", i: int = 0
) -> cal.Example:
    return cal.Example(
        f"{ds}{i}",
        ds,
        f"{ds}{i}",
        {"model": "auto", "messages": [{"role": "user", "content": "x"}]},
        strong,
        weak_score,
        strong_score,
    )


def test_auc() -> None:
    assert cal.auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert cal.auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert cal.auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    assert cal.auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75


def test_pgr_and_apgr() -> None:
    # Two prompts: the weak model fails the first (0 vs 1) and ties on the second.
    examples = [_ex(1, 0.0, 1.0, i=0), _ex(0, 1.0, 1.0, i=1)]
    perfect = [0.9, 0.1]
    assert cal.pgr_at(perfect, examples, 0.0) == 0.0
    assert cal.pgr_at(perfect, examples, 0.5) == 1.0
    assert cal.pgr_at(perfect, examples, 1.0) == 1.0
    assert cal.apgr(perfect, examples) == pytest.approx(8 / 11)  # k = round(c * 2)
    backwards = [0.1, 0.9]
    assert cal.apgr(backwards, examples) < cal.apgr(perfect, examples)


def test_threshold_report() -> None:
    examples = [_ex(1, 0, 1, i=0), _ex(1, 0, 1, i=1), _ex(0, 1, 1, i=2), _ex(0, 1, 1, i=3)]
    r = cal.threshold_report([0.9, 0.4, 0.6, 0.1], examples, 0.5)
    assert r["strong_share"] == 0.5
    assert r["strong_recall"] == 0.5
    assert r["weak_recall"] == 0.5
    assert r["accuracy"] == 0.5
    assert r["pgr"] == 0.5


def test_thresholds_keep_the_target_quality() -> None:
    examples = [_ex(1, 0, 1, i=i) for i in range(5)] + [_ex(0, 1, 1, i=10 + i) for i in range(5)]
    scores = [0.9, 0.8, 0.7, 0.6, 0.3, 0.5, 0.4, 0.2, 0.1, 0.05]
    t = cal.choose_thresholds(scores, examples, 0.8)
    assert t.frontier == 0.6  # the 4 highest recover 4/5 of the gap
    assert t.standard <= t.frontier


def test_rows_of_both_schemas_load(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        '{"id": "7/turn2", "category": "math", "prompt": "and now?", "previous_user_turn": '
        '"2+2?", "weak_score": 3, "strong_score": 9, "weak_suffices": false}\n'
        '{"id": "a", "task": "classify", "tier": "light", "request": {"model": "gpt-4o", '
        '"messages": [{"role": "user", "content": "label it"}]}}\n'
    )
    first, second = cal.load_examples([path])
    assert first.strong == 1
    assert [m["role"] for m in first.body["messages"]] == ["user", "assistant", "user"]
    assert first.dataset == "mixed"
    assert (second.strong, second.weak_score, second.strong_score) == (0, 1.0, 1.0)


def _separable(n: int, every: int, judged: bool = False) -> list[cal.Example]:
    """``n`` rows in each of two datasets; every ``every``-th is a hard proof, the rest easy."""
    rows = []
    for i in range(n):
        hard = i % every == 0
        text = (
            "prove the theorem rigorously about primes"
            if hard
            else "translate this greeting into french"
        )
        for ds in ("one", "two"):
            body = {"messages": [{"role": "user", "content": f"{text} {i}"}]}
            rows.append(
                cal.Example(
                    f"{ds}{i}", ds, f"{ds}{i}", body, int(hard), float(not hard), 1.0, judged=judged
                )
            )
    return rows


def test_fit_learns_a_separable_signal() -> None:
    pytest.importorskip("numpy")
    seed = load_rules()
    rows = _separable(40, every=2)
    fitted = cal.fit(seed, rows, cal.FitOptions(target_quality=0.9))
    scores = [fitted.score(e.body)[0] for e in rows]
    assert cal.auc(scores, [e.strong for e in rows]) == 1.0
    assert fitted.spec.lexicon, "words seen in both datasets enter the lexicon"
    assert fitted.tier_for(max(scores)) == "frontier"
    assert fitted.tier_for(min(scores)) == "light"


def test_pgr_does_not_depend_on_row_order_when_scores_tie() -> None:
    examples = [_ex(1, 0, 1, i=0), _ex(0, 1, 1, i=1), _ex(1, 0, 1, i=2), _ex(0, 1, 1, i=3)]
    constant = [0.5] * 4
    forward = cal.apgr(constant, examples)
    backward = cal.apgr(constant[::-1], examples[::-1])
    assert forward == pytest.approx(backward)
    assert forward == pytest.approx(0.5)


def test_auc_refuses_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        cal.auc([0.1, float("nan")], [0, 1])


@pytest.mark.parametrize(
    "line",
    [
        '{"id": "a", "tier": "Frontier", "request": {"messages": []}}',
        '{"id": "a", "tier": "light", "request": "not an object"}',
        '{"id": "b", "prompt": "x", "weak_score": 1, "strong_score": 1, "weak_suffices": "no"}',
        "[1, 2]",
    ],
)
def test_bad_labels_are_errors_naming_the_line(tmp_path, line: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "ok", "tier": "light", "request": {"messages": []}}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:2"):
        cal.load_examples([path])


def test_turns_of_one_conversation_share_a_fold(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = []
    for q in range(30):
        for turn in (1, 2):
            rows.append(
                f'{{"id": "{q}/turn{turn}", "prompt": "p", "weak_score": 1, '
                f'"strong_score": 1, "weak_suffices": true}}'
            )
    path = tmp_path / "renamed-dev-set.jsonl"
    path.write_text("\n".join(rows) + "\n")
    examples = cal.load_examples([path])
    fold_of = dict(zip((e.id for e in examples), cal.folds(examples, 5), strict=True))
    assert all(fold_of[f"{q}/turn1"] == fold_of[f"{q}/turn2"] for q in range(30))


def test_a_seed_with_fewer_features_fits_only_those() -> None:
    pytest.importorskip("numpy")
    import msgspec

    from gearshift.routing.classify import Rules

    seed = load_rules()
    small = Rules(
        msgspec.structs.replace(
            seed.spec, counters={"ask_chars": 0.0}, patterns=seed.spec.patterns[:1]
        ),
        "small",
    )
    rows = [
        cal.Example(
            f"{ds}{i}",
            ds,
            f"{ds}{i}",
            {"messages": [{"role": "user", "content": "x" * (10 + 300 * (i % 2))}]},
            i % 2,
            float(1 - i % 2),
            1.0,
        )
        for i in range(20)
        for ds in ("a", "b")
    ]
    fitted = cal.fit(small, rows, cal.FitOptions())
    assert set(fitted.spec.counters) == {"ask_chars"}
    assert fitted.spec.counters["ask_chars"] > 0
    scores = [fitted.score(e.body)[0] for e in rows]
    assert cal.auc(scores, [e.strong for e in rows]) == 1.0


def test_fit_with_a_target_recall_writes_a_risk_map_presets_and_thresholds() -> None:
    pytest.importorskip("numpy")
    seed = load_rules()
    rows = _separable(60, every=3, judged=True)
    fitted = cal.fit(seed, rows, cal.FitOptions(target_recall=0.95, min_rows=2))
    risk = fitted.spec.risk
    assert risk.scores, "a risk map was fitted"
    assert risk.risks == sorted(risk.risks)
    assert set(risk.presets) == {"safe", "balanced", "thrifty"}
    assert risk.presets["safe"] <= risk.presets["balanced"] <= risk.presets["thrifty"]
    assert 0 < risk.standard <= 1
    t = fitted.spec.thresholds
    assert 0 < t.standard <= t.frontier < 1
    # Separable data: every frontier row is at or above the threshold, and reads risky.
    hard = [fitted.score(e.body)[0] for e in rows if e.strong]
    easy = [fitted.score(e.body)[0] for e in rows if not e.strong]
    assert min(hard) >= t.frontier
    assert fitted.risk(min(hard)) > fitted.risk(max(easy))


def test_rows_of_one_prompt_share_a_group() -> None:
    row = {
        "prompt": "Write a haiku.",
        "previous_user_turn": "",
        "weak_score": 1,
        "strong_score": 1,
        "weak_suffices": True,
    }
    a = cal.example_from_row({**row, "id": "alpaca/3/gpt35"}, "alpaca_eval", 1)
    b = cal.example_from_row({**row, "id": "alpaca/3/claude"}, "alpaca_eval", 2)
    c = cal.example_from_row({**row, "id": "alpaca/4/gpt35", "prompt": "Other."}, "x", 3)
    assert a.group == b.group != c.group
    turn = cal.example_from_row({**row, "id": "81/turn2"}, "mt_bench", 4)
    assert turn.group == "81"
