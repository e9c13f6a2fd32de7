"""Words beyond ASCII: letters of any script, pairs of characters where words have no
spaces, term rules in other languages, the instruction of a long paste, script counters."""

from __future__ import annotations

from dataclasses import dataclass

from gearshift.routing.features import (
    COUNTERS,
    Found,
    Terms,
    counters,
    lexicon_words,
    read_text,
    tokens,
    word_set,
)


@dataclass
class _Window:
    ask_head: int = 500
    ask_tail: int = 200
    system_head: int = 400
    prev_head: int = 300


@dataclass
class _Rule:
    terms: list[str]
    scope: str = "ask"
    pattern: str = ""


def _found(text: str) -> Found:
    return Found(read_text({"messages": [{"role": "user", "content": text}]}, _Window()))


def _fires(terms: list[str], text: str, scope: str = "ask") -> bool:
    return bool(Terms([_Rule(terms, scope)]).matched(_found(text)))


def test_ascii_words_are_split_as_before() -> None:
    assert tokens("don't step-by-step x_y 3rd") == [b"don't", b"step-by-step", b"x", b"y", b"rd"]


def test_accented_and_cyrillic_words_stay_whole() -> None:
    words = word_set("überprüfe die verträge, démontrez что такое")
    assert {"überprüfe", "verträge", "démontrez", "что", "такое"} <= {w.decode() for w in words}
    # Before, non-ASCII bytes split words: "berpr", "fe" — no such fragments now.
    assert b"berpr" not in words
    assert b"fe" not in words


def test_mixed_text_keeps_the_same_ascii_words() -> None:
    mixed = word_set("please translate “this” — café")
    assert {b"please", b"translate", b"this", "café".encode()} <= mixed


def test_spaceless_scripts_are_read_as_pairs_of_characters() -> None:
    pieces = [t.decode() for t in tokens("次の文章を要約してください")]
    assert {"要約", "文章", "して"} <= set(pieces)
    assert all(len(p) == 2 for p in pieces)
    # Korean words carry their particles; pairs find the stem.
    assert "증명" in {t.decode() for t in tokens("다음 정리를 증명하시오")}
    # A run of one or two characters is kept whole.
    assert tokens("猫") == ["猫".encode()]


def test_lexicon_words_take_words_of_any_script() -> None:
    assert {"要約", "démontrez", "beweise"} <= lexicon_words("beweise démontrez 要約して")
    assert "a" not in lexicon_words("a b c")


def test_term_rules_fire_in_other_languages_and_scripts() -> None:
    assert _fires(["beweise"], "Beweise, dass es unendlich viele Primzahlen gibt.")
    assert _fires(["démontrez"], "Démontrez que la somme est paire.")
    assert _fires(["証明"], "次の定理を証明してください。")  # a piece: a word lookup
    assert _fires(["証明せよ"], "次の定理を証明せよ。")  # longer: pieces, then substring
    assert not _fires(["証明せよ"], "証明書を発行して、せよと言われた")
    assert _fires(["증명"], "다음 정리를 증명하시오")
    assert not _fires(["beweise"], "Bitte fasse den Text zusammen.")


def test_ascii_terms_still_fire_in_non_ascii_text() -> None:
    assert _fires(["step by step"], "Erkläre step by step, warum — bitte")
    assert _fires(["proof"], "a proof, s\u2019il vous plaît")


def test_the_instruction_of_a_long_paste_is_its_own_window() -> None:
    doc = "\n".join(f"Line {i}: the supplier shall deliver goods on time." for i in range(60))
    before = "Extract every date as JSON.\n\n" + doc
    after = doc + "\n\nDo these clauses contradict each other? Decide and justify."
    assert _fires(["extract"], before, "instr")
    assert not _fires(["contradict"], before, "instr")
    assert _fires(["contradict"], after, "instr")
    # A short ask has no such window: the rule does not fire on the ask itself.
    assert not _fires(["extract"], "Extract every date as JSON.", "instr")


def _counter(name: str, text: str) -> float:
    t = read_text({"messages": [{"role": "user", "content": text}]}, _Window())
    return dict(zip(COUNTERS, counters(t), strict=True))[name]


def test_spaceless_counter_reads_the_share_of_such_script() -> None:
    assert _counter("spaceless", "Summarize this text please") == 0.0
    assert _counter("spaceless", "次の文章を要約してください") == 1.0
    assert (
        0.0 < _counter("spaceless", "Please translate: 今日は良い天気です and more words here") < 1
    )


def test_code_files_counts_file_names_in_code() -> None:
    one = "fix this:\n```python\nx = load()\n```"
    many = "The bug spans app/models.py, app/views.py and web/Cart.tsx:\n```python\nx = f()\n```"
    assert _counter("code_files", one) == 0.0
    assert _counter("code_files", many) == 0.75


def test_pairs_are_read_from_the_head_and_tail_of_long_spaceless_text() -> None:
    head = "あ" * 100 + "要約" + "い" * 100  # the pair 要約 sits within the first 120 chars
    middle = "う" * 300 + "証明" + "え" * 300  # 証明 only in the middle: not read
    tail = "お" * 100 + "翻訳"  # the last characters are read
    pieces = {t.decode() for t in tokens(head + middle + tail)}
    assert "要約" in pieces
    assert "翻訳" in pieces
    assert "証明" not in pieces
    assert len(tokens(head + middle + tail)) <= 160


def test_opening_terms_match_as_before_with_many_prefixes() -> None:
    openings = ["^what is", "^was ist", "^qu'est-ce que", "^что такое", "^w", "^wa"]
    assert _fires(openings, "What is a monad?")
    assert _fires(["^was ist"], "  Was ist ein Monad?")
    assert _fires(["^что такое"], "Что такое монада?")
    assert _fires(["^w"], "why not")  # a one-character opening still counts
    assert not _fires(["^was ist", "^what is"], "Tell me what is a monad")


def test_symbols_and_punctuation_beyond_ascii_split_words() -> None:
    words = {w.decode() for w in word_set("«citation» — prix 5€ ¿qué? x\u00d7y, fin… 👍ok 、。")}
    assert {"citation", "prix", "qué", "fin", "ok", "x", "y"} <= words
    assert not any(c in "«»—€¿\u00d7…👍、。" for w in words for c in w)
