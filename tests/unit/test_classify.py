from __future__ import annotations

import math
import time
from pathlib import Path

import msgspec
import pytest

from gearshift.routing.classify import (
    COUNTERS,
    Lexicons,
    PatternRule,
    Rules,
    RulesError,
    RulesFile,
    Thresholds,
    decode_rules,
    load_rules,
)
from gearshift.routing.tablefile import encode_rules, write_rules

SHIPPED = load_rules()


def _body(text: str, **extra: object) -> dict[str, object]:
    return {"model": "auto", "messages": [{"role": "user", "content": text}], **extra}


def test_the_shipped_table_loads_and_is_fitted() -> None:
    spec = SHIPPED.spec
    assert set(spec.counters) == set(COUNTERS)
    assert spec.lexicon, "the shipped table carries a learned lexicon"
    assert "fitted" in spec.provenance
    assert 0 < spec.thresholds.standard <= spec.thresholds.frontier < 1


def test_encoding_round_trips() -> None:
    again = decode_rules(encode_rules(SHIPPED.spec, ["a header"]), "again")
    assert again == SHIPPED.spec


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"bias = 'high'", "Expected `float`, got `str` - at `$.bias`"),
        (b"[counters]\nno_such_counter = 1.0\n", "unknown counters ['no_such_counter']"),
        (b"[[patterns]]\nid = 'x'\npattern = '(unclosed'\n", "$.patterns[0] (x): bad regex"),
        (b"[[patterns]]\nid = 'x'\npattern = 'a'\nscope = 'nowhere'\n", "$.patterns[0].scope"),
        (b"[thresholds]\nstandard = 0.8\nfrontier = 0.2\n", "thresholds must satisfy"),
        (b"surprise = 1\n", "unknown field `surprise`"),
        (b"[[patterns]\n", "not valid TOML"),
    ],
)
def test_a_malformed_table_is_a_clear_error(tmp_path: Path, text: bytes, message: str) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(text)
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "nope.toml")


PACKAGE = Path(__file__).resolve().parents[2] / "src" / "gearshift" / "routing"


def test_the_shipped_table_keeps_its_word_maps_in_msgpack() -> None:
    text = (PACKAGE / "rules.toml").read_text()
    assert 'lexicons = "rules.lexicons.msgpack"' in text
    assert "[semantic]" not in text
    assert "[lexicon]" not in text
    # The part people read: weights, and the term rules' terms in eleven languages (~4,400
    # terms, which reviewers do check); the ~94k words' maps stay in the msgpack file.
    assert len(text) < 80_000, "the TOML is the part people read"
    assert (PACKAGE / "rules.lexicons.msgpack").is_file()
    assert len(SHIPPED.spec.semantic) > 30_000


def _inline(spec: RulesFile, tmp_path: Path) -> Path:
    path = tmp_path / "inline.toml"
    path.write_bytes(encode_rules(spec, ["one file, as tables were before lexicons files"]))
    return path


def test_split_and_inline_tables_decide_alike(tmp_path: Path) -> None:
    path = _inline(SHIPPED.spec, tmp_path)
    assert b"[semantic]" in path.read_bytes()
    inline = load_rules(path)
    assert inline.spec == SHIPPED.spec
    bodies = [_body(t) for t in EASY + HARD]
    bodies.append(
        {
            "messages": [
                {"role": "system", "content": "You are a careful tutor."},
                {"role": "user", "content": HARD[0]},
                {"role": "assistant", "content": "..."},
                {"role": "user", "content": "and now explain it to a child"},
            ]
        }
    )
    for body in bodies:
        assert inline.score(body)[0] == SHIPPED.score(body)[0]
        assert inline.decide(body) == SHIPPED.decide(body)


def test_written_tables_load_from_anywhere_and_keep_every_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    odd = [1 / 3, 0.1 + 0.2, -2.5e-7, 1e-300, 123456.789, -0.0, 4.053]
    spec = msgspec.structs.replace(
        SHIPPED.spec,
        lexicon={"naïve": odd[0], "zebra": odd[1], "apple": odd[2], "日本": odd[3]},
        lead_lexicon={"please": odd[4]},
        semantic={**SHIPPED.spec.semantic, "zz-odd": odd[5], "aa-odd": odd[6]},
    )
    (tmp_path / "tables").mkdir()
    written = write_rules(spec, tmp_path / "tables" / "mine.toml", ["a header"])
    assert written == tmp_path / "tables" / "mine.lexicons.msgpack"
    text = (tmp_path / "tables" / "mine.toml").read_text()
    assert text.startswith("# a header\n")
    assert 'lexicons = "mine.lexicons.msgpack"' in text
    assert "[lexicon]" not in text
    monkeypatch.chdir(tmp_path)  # the lexicons file is found beside the TOML, not in the cwd
    again = load_rules("tables/mine.toml").spec
    assert again == spec
    for name in ("lexicon", "lead_lexicon", "semantic"):
        ours, theirs = getattr(again, name), getattr(spec, name)
        assert list(ours) == sorted(theirs), "the file keeps the words sorted"
        assert [ours[w].hex() for w in theirs] == [theirs[w].hex() for w in theirs]
    # The same table has the same bytes: a refit that changes nothing changes no file.
    first = written.read_bytes()
    write_rules(again, tmp_path / "tables" / "mine.toml", ["a header"])
    assert written.read_bytes() == first


def _split(tmp_path: Path) -> tuple[Path, Path]:
    spec = msgspec.structs.replace(
        SHIPPED.spec, lexicon={"proof": 1.5}, lead_lexicon={}, semantic={"hi": -0.5}
    )
    path = tmp_path / "rules.toml"
    return path, write_rules(spec, path)


def _drop_digest(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not line.startswith("lexicons_sha256")))


def test_a_missing_or_corrupt_lexicons_file_is_a_clear_error(tmp_path: Path) -> None:
    path, lexicons = _split(tmp_path)
    good = lexicons.read_bytes()
    assert load_rules(path).spec.lexicon == {"proof": 1.5}

    def error() -> str:
        with pytest.raises(RulesError) as info:
            load_rules(path)
        assert str(path) in str(info.value)
        return str(info.value)

    lexicons.unlink()
    assert "lexicons file" in error()
    assert "cannot read: No such file or directory" in error()
    lexicons.write_bytes(good[:-3])
    assert "does not match lexicons_sha256" in error()
    _drop_digest(path)  # a hand-made pair may go without a digest: decoding still checks
    assert "not valid msgpack" in error()
    lexicons.write_bytes(msgspec.msgpack.encode([1, 2]))
    assert "Expected `object`, got `array`" in error()
    lexicons.write_bytes(msgspec.msgpack.encode({"semantic": {"hi": "high"}}))
    assert "Expected `float`, got `str` - at `$.semantic[...]`" in error()
    lexicons.write_bytes(msgspec.msgpack.encode({"semantic": {"hi": float("nan")}}))
    assert "finite" in error()
    lexicons.write_bytes(msgspec.msgpack.encode(Lexicons(lexicon={"proof": 2.0})))
    assert load_rules(path).spec.lexicon == {"proof": 2.0}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('\n[semantic]\n"hi" = 1.0\n', "has inline lexicons too"),
        ('\n[lexicon]\n"hi" = 1.0\n', "has inline lexicons too"),
    ],
)
def test_a_table_has_its_word_maps_in_one_place(tmp_path: Path, extra: str, message: str) -> None:
    path, _ = _split(tmp_path)
    path.write_text(path.read_text() + extra)
    with pytest.raises(RulesError, match=message):
        load_rules(path)


def test_a_lexicons_file_needs_a_directory_and_a_digest_needs_a_file() -> None:
    with pytest.raises(RulesError, match="its directory is not known"):
        decode_rules(b'lexicons = "rules.lexicons.msgpack"\n', "bytes")
    with pytest.raises(RulesError, match="lexicons_sha256 without a lexicons file"):
        decode_rules(b'lexicons_sha256 = "00"\n', "bytes")


def test_structural_features() -> None:
    doc = "Summarize this in one line.\n\n" + ("The committee met and discussed. " * 200)
    _, f = SHIPPED.features(_body(doc))
    assert f["doc_short_ask"] == 1.0
    _, f = SHIPPED.features(_body("fix this:\n```python\ndef f(x):\n    return {x: [x]}\n```"))
    assert f["code_fence"] > 0
    assert f["code_chars"] > 0
    _, f = SHIPPED.features(_body("Which is right?\nA. one\nB. two\nC. three\nD. four"))
    assert f["options"] == 1.0
    _, f = SHIPPED.features(_body("Traduis en anglais : « Où est la gare ? » s'il vous plaît"))
    assert f["non_ascii"] > 0
    _, f = SHIPPED.features(
        _body(
            "hi",
            tools=[{"type": "function"}],
            max_tokens=20,
            response_format={"type": "json_schema"},
        )
    )
    assert (f["tools"], f["max_tokens_small"], f["json_schema"]) == (1.0, 1.0, 1.0)
    _, f = SHIPPED.features(
        {
            "messages": [
                {"role": "system", "content": "You label tickets."},
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "second"},
                        {"type": "image_url", "image_url": {"url": "x"}},
                    ],
                },
            ]
        }
    )
    assert f["has_system"] == 1.0
    assert f["depth"] > 0
    assert f["image"] == 1.0
    assert f["w:second"] == 1.0
    assert f["p:first"] == 1.0


def test_only_bounded_windows_are_read() -> None:
    head = "Extract the invoice number. "
    huge = head + "lorem ipsum dolor " * 60_000 + " Reply with the number only."
    t, _ = SHIPPED.features(_body(huge))
    window = SHIPPED.spec.window
    assert len(t.ask) <= window.ask_head + window.ask_tail + 1
    assert t.ask.startswith("extract the invoice")
    assert t.ask.endswith("reply with the number only.")
    assert t.ask_len == len(huge)
    started = time.perf_counter()
    SHIPPED.decide(_body(huge))
    assert time.perf_counter() - started < 0.05, "a 1M-char prompt is decided in milliseconds"


def test_tiers_follow_the_thresholds() -> None:
    rules = SHIPPED.with_thresholds(0.3, 0.6)
    assert rules._semantic is SHIPPED._semantic, "the compiled maps are shared, not rebuilt"
    assert SHIPPED.spec.thresholds != rules.spec.thresholds == Thresholds(0.3, 0.6)
    assert rules.score(_body(HARD[0])) == SHIPPED.score(_body(HARD[0]))
    with pytest.raises(RulesError, match="thresholds must satisfy"):
        SHIPPED.with_thresholds(0.7, 0.6)
    assert [rules.tier_for(s) for s in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [
        "light",
        "light",
        "standard",
        "standard",
        "frontier",
        "frontier",
    ]
    assert rules.tier_for(0.1, ("cheap", "mid", "good", "best")) == "cheap"
    assert rules.tier_for(0.7, ("cheap", "mid", "good", "best")) == "best"
    assert rules.tier_for(0.35, ("cheap", "mid", "good", "best")) == "mid"
    assert rules.tier_for(0.55, ("cheap", "mid", "good", "best")) == "good"


def test_decision_has_score_tier_tokens_and_top_reasons() -> None:
    d = SHIPPED.decide(_body("Translate 'good morning' into Spanish."))
    assert 0.0 <= d.score <= 1.0
    assert d.tier in ("light", "standard", "frontier")
    assert 0 < d.tokens < 20
    assert 1 <= len(d.reasons) <= 3
    assert all(r[-1] in "+-" for r in d.reasons)


EASY = [
    "Classify the sentiment of this review as positive or negative: 'Arrived late, box "
    "crushed, but the blender works fine.'",
    "Translate into German: 'Your order has shipped and will arrive on Tuesday.'",
    "Extract the invoice number and the total from: 'Invoice INV-2291, total due $418.20'.",
    "Write a short, friendly birthday message for my coworker Dana.",
]
HARD = [
    "Prove that for every integer n > 1, the sum 1 + 1/2 + ... + 1/n is never an integer.",
    "This Go code deadlocks under load when two transfers run in opposite directions; find "
    "the bug and fix it:\n```go\nfunc transfer(a, b *Account, amt int) {\n  a.mu.Lock()\n"
    "  b.mu.Lock()\n  a.bal -= amt\n  b.bal += amt\n  b.mu.Unlock()\n  a.mu.Unlock()\n}\n```",
    "Write a Python function that returns the longest palindromic subsequence of a string in "
    "O(n^2) time and O(n) memory, and explain why the recurrence is correct.",
    "Find all integer solutions of x^3 + y^3 = (x + y)^2 and prove there are no others.",
]


def test_the_fitted_table_ranks_clear_cases() -> None:
    easy = [SHIPPED.decide(_body(t)).score for t in EASY]
    hard = [SHIPPED.decide(_body(t)).score for t in HARD]
    assert max(easy) < min(hard), (easy, hard)
    assert all(SHIPPED.decide(_body(t)).tier == "light" for t in EASY)
    assert all(SHIPPED.decide(_body(t)).tier == "frontier" for t in HARD)


def test_a_refitted_table_can_replace_weights_without_touching_features() -> None:
    spec = msgspec.structs.replace(SHIPPED.spec, lexicon={}, bias=-5.0)
    rules = Rules(spec, "test")
    assert rules.decide(_body(HARD[0])).score < 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"bias = nan\n", "finite"),
        (b"[counters]\nask_chars = inf\n", "finite"),
        (b"prev_lexicon_scale = 2.0\n", "prev_lexicon_scale"),
        (b"[window]\nask_head = -1\n", "window sizes"),
    ],
)
def test_non_finite_or_out_of_range_numbers_are_refused(
    tmp_path: Path, text: bytes, message: str
) -> None:
    path = tmp_path / "rules.toml"
    path.write_bytes(text)
    with pytest.raises(RulesError, match=message):
        load_rules(path)


def test_phrases_match_as_phrases_not_as_bags_of_words() -> None:
    spec = msgspec.structs.replace(
        SHIPPED.spec,
        patterns=[PatternRule(id="yn", terms=["answer no"], weight=5.0)],
        counters={},
        lexicon={},
    )
    rules = Rules(spec, "t")
    assert rules.features(_body("Please answer no more than two lines."))[1]["re:yn"] == 1.0
    assert rules.features(_body("No, that answer is wrong."))[1]["re:yn"] == 0.0


def test_lists_and_options_are_found_when_indented() -> None:
    _, f = SHIPPED.features(_body("Pick one:\n  a) red\n  b) green\n  c) blue\n  d) none"))
    assert f["options"] == 1.0
    _, f = SHIPPED.features(_body("Steps:\n  - unpack\n  - plug in\n  - switch on"))
    assert f["list_items"] > 0


def test_character_counters_read_the_whole_window() -> None:
    _, f = SHIPPED.features(_body("1. unpack\n2. plug in\n3. switch on"))
    assert f["list_items"] == 3 / 8, "a list on the first line counts from its first item"
    _, f = SHIPPED.features(_body("a) red\nb) green\nc) blue"))
    assert f["options"] == 1.0
    _, f = SHIPPED.features(_body("a) red\nc) blue\nd) none"))
    assert f["options"] == 0.0, "options need a b) line"
    _, f = SHIPPED.features(_body("x = `a` and `b`? or `c`?"))
    assert f["code_fence"] == 0.0, "single backticks are not a fence"
    assert f["questions"] == 2 / 4
    _, f = SHIPPED.features(_body("solve x^2 + 3 = 12"))
    # ^ + = are math characters; = is also a code character; three digits.
    assert f["math_chars"] == pytest.approx(min(1.0, 3 / 18 * 10))
    assert f["code_chars"] == pytest.approx(min(1.0, 1 / 18 * 10))
    assert f["digits"] == pytest.approx(min(1.0, 3 / 18 * 10))


def test_odd_bodies_never_raise() -> None:
    for body in (
        {"messages": [{"role": "user", "content": "lone \ud800 surrogate"}]},
        {"messages": "nope"},
        {"messages": [None, 3, {"role": "user", "content": 5}]},
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": None}, "str-part", {"type": 1}],
                }
            ]
        },
    ):
        d = SHIPPED.decide(body)
        assert 0.0 <= d.score <= 1.0
    assert 0.0 <= SHIPPED.decide([1, 2]).score <= 1.0  # type: ignore[arg-type]


def test_non_ascii_prompts_are_estimated_cautiously() -> None:
    chinese = SHIPPED.decide(_body("你好" * 3000))
    english = SHIPPED.decide(_body("hi" * 3000))
    assert chinese.tokens > 2 * english.tokens


def test_semantic_lexicon_is_a_mean_over_window_words() -> None:
    spec = msgspec.structs.replace(
        SHIPPED.spec,
        counters={},
        patterns=[],
        lexicon={},
        bias=0.0,
        semantic={"prove": 2.0, "lemma": 1.0, "translate": -3.0},
        semantic_weight=1.5,
    )
    rules = Rules(spec, "t")
    _, f = rules.features(_body("prove the lemma please"))
    assert f["semantic"] == pytest.approx(1.5)  # mean of 2.0 and 1.0; "please" has no score
    _, f = rules.features(_body("nothing known here"))
    assert f["semantic"] == 0.0
    score, _, parts = rules.score(_body("prove the lemma please"))
    assert "semantic" in [name for _, name in parts]
    assert score == pytest.approx(1 / (1 + math.exp(-1.5 * 1.5)))
    again = decode_rules(encode_rules(spec), "again")
    assert again.semantic == spec.semantic
    assert again.semantic_weight == 1.5


def test_fitting_keeps_the_semantic_lexicon_and_fits_its_weight() -> None:
    pytest.importorskip("numpy")
    from gearshift.offline import calibrate as cal

    spec = msgspec.structs.replace(
        SHIPPED.spec,
        counters={"ask_chars": 0.0},
        patterns=[],
        lexicon={},
        semantic={"theorem": 1.0, "greeting": -1.0},
    )
    seed = Rules(spec, "seed")
    rows = [
        cal.Example(
            f"{ds}{i}",
            ds,
            f"{ds}{i}",
            {
                "messages": [
                    {
                        "role": "user",
                        "content": ("state the theorem" if i % 2 else "a greeting") + f" {i}",
                    }
                ]
            },
            i % 2,
            float(1 - i % 2),
            1.0,
        )
        for i in range(20)
        for ds in ("a", "b")
    ]
    fitted = cal.fit(seed, rows, cal.FitOptions(min_rows=100))
    assert fitted.spec.semantic == spec.semantic
    assert fitted.spec.semantic_weight > 0
