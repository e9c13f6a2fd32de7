"""What the classifier looks at: bounded text windows, structural counters, words, terms.

One walk over the messages keeps lower-cased windows of the text that matters — the head and
tail of the last user turn, the head of the system prompt and of the previous user turn — so
a 100k-token prompt costs about what a 1k-token one does (long is not the same as hard).
Words are found with one ``bytes.translate`` and ``split`` (no regex), term rules with set
lookups: this module is on the hot path of every request.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gearshift.inbound.chat import content_text

_KEEP = frozenset(range(ord("a"), ord("z") + 1)) | {ord("'"), ord("-")}
# Letters a-z, ' and - stay; every other byte (digits, punctuation, UTF-8) splits words.
_WORD_TABLE = bytes(c if c in _KEEP else 32 for c in range(256))
_DIGITS_TABLE = bytes(48 if 48 <= c <= 57 or c == 46 else 32 for c in range(256))
# The character counters read one short string: each byte of a class kept as its class
# letter — code-only ``c``, math-only ``m``, both (``= < >``) ``b``, digit ``d``, ``?`` and
# a backtick as themselves — every other byte deleted, in one ``translate``. Prose has few
# such bytes, so the counts that follow are over a few dozen bytes, not the whole window.
_CODE_BYTES = b"{};()[]=<>_"
_MATH_BYTES = b"^=+*/<>"


def _class_of(c: int) -> int:
    code, math_ = c in _CODE_BYTES, c in _MATH_BYTES
    if code and math_:
        return ord("b")
    if code:
        return ord("c")
    if math_:
        return ord("m")
    if 48 <= c <= 57:
        return ord("d")
    return c  # ? and ` stay themselves; everything else is deleted


_CLASS_TABLE = bytes(_class_of(c) for c in range(256))
_CLASS_DELETE = bytes(c for c in range(256) if c not in b"?`" and _class_of(c) == c)
_MATH_UNICODE = "√∫∑∏≤≥≠±π∞"
# List and option lines: anchored on a literal newline (the regex engine then jumps from one
# newline to the next; ``(?m)^`` would try every position). Matched against "\n" + ask.
_LIST_LINE = re.compile(r"\n\s*(?:\d{1,2}[.)]|[-*•]|\([a-z]\))(?=\s)")
_OPTION_LINE = re.compile(r"\n\s*\(?[a-d][.)](?=\s)")


class WindowSpec(Protocol):
    @property
    def ask_head(self) -> int: ...
    @property
    def ask_tail(self) -> int: ...
    @property
    def system_head(self) -> int: ...
    @property
    def prev_head(self) -> int: ...


@dataclass(slots=True)
class Text:
    """The parts of a request the features look at (bounded windows, lower-cased)."""

    ask: str = ""
    ask_b: bytes = b""
    system: str = ""
    prev: str = ""
    ask_len: int = 0
    system_len: int = 0
    total_chars: int = 0
    user_turns: int = 0
    has_image: bool = False
    body: Mapping[str, Any] = field(default_factory=dict)


def _window(text: str, head: int, tail: int = 0) -> str:
    if len(text) <= head + tail:
        return text.lower()
    return (text[:head] + "\n" + text[-tail:] if tail else text[:head]).lower()


def read_text(body: Mapping[str, Any], window: WindowSpec) -> Text:
    """Walk the messages once and keep bounded windows of what matters."""
    if not isinstance(body, Mapping):
        return Text()
    messages = body.get("messages")
    out = Text(body=body)
    if not isinstance(messages, list):
        return out
    system: list[str] = []
    users: list[str] = []
    total = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        text, image = content_text(message.get("content"))
        total += len(text)
        out.has_image |= image
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(text)
        elif role == "user":
            users.append(text)
    out.user_turns = len(users)
    out.total_chars = total
    system_text = "\n".join(system)
    out.system_len = len(system_text)
    out.system = _window(system_text, window.system_head)
    if users:
        out.ask_len = len(users[-1])
        out.ask = _window(users[-1], window.ask_head, window.ask_tail)
        out.ask_b = out.ask.encode("utf-8", "surrogatepass")
        if len(users) > 1:
            out.prev = _window(users[-2], window.prev_head)
    return out


def word_set(text: str) -> set[bytes]:
    """The distinct word tokens of a lower-cased window (bytes, for set lookups)."""
    if not text:
        return set()
    return set(text.encode("utf-8", "surrogatepass").translate(_WORD_TABLE).split())


def lexicon_words(text: str) -> set[str]:
    """The words a lexicon may learn: tokens of 2+ characters starting with a letter."""
    return {w.decode() for w in word_set(text) if len(w) > 1 and 97 <= w[0] <= 122}


def _log_scale(n: float, unit: float) -> float:
    return math.log2(1.0 + n / unit) / 8.0


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _doc_with_short_ask(t: Text) -> float:
    # A long paste whose instruction (first or last paragraph) is short: a reading task.
    if t.ask_len < 1500:
        return 0.0
    first = t.ask.find("\n\n")
    if first < 0:
        return 1.0 if len(t.ask) < 300 else 0.0
    last = len(t.ask) - t.ask.rfind("\n\n") - 2
    return 1.0 if min(first, last) < 300 else 0.0


# Hand-made counters: structure, not vocabulary. Their weights are fitted like the rest;
# ``counters`` returns their values in this order.
COUNTERS: tuple[str, ...] = (
    "ask_chars",
    "system_chars",
    "has_system",
    "depth",
    "tools",
    "tool_choice_forced",
    "json_schema",
    "json_object",
    "max_tokens_small",
    "image",
    "code_fence",
    "code_chars",
    "math_chars",
    "digits",
    "numbers",
    "questions",
    "list_items",
    "options",
    "non_ascii",
    "doc_short_ask",
)


def counters(t: Text) -> tuple[float, ...]:
    """Every counter's value, in ``COUNTERS`` order, in one function (the hot path: one call
    instead of twenty, and one pass over the bytes for the density counters)."""
    ask, ask_b, body = t.ask, t.ask_b, t.body
    size = len(ask_b)
    code = math_ = digits = numbers = questions = fences = 0.0
    if size:
        classes = ask_b.translate(_CLASS_TABLE, _CLASS_DELETE)
        if classes:
            both = classes.count(b"b")
            scale = 10.0 / size
            code = min(1.0, (classes.count(b"c") + both) * scale)
            math_ = min(1.0, (classes.count(b"m") + both) * scale)
            digits = min(1.0, classes.count(b"d") * scale)
            questions = min(classes.count(b"?"), 4) / 4.0
            if classes.count(b"`") >= 3:
                fences = min(ask.count("```"), 4) / 4.0
        numbers = min(len(ask_b.translate(_DIGITS_TABLE).split()), 16) / 16.0
    non_ascii = 0.0
    if not ask.isascii():
        math_ = min(1.0, math_ + sum(ask.count(c) for c in _MATH_UNICODE) / len(ask) * 10)
        non_ascii = min(1.0, (size - len(ask)) / max(1, len(ask)) * 3)
    list_items = options = 0.0
    if "\n" in ask:  # the regexes only run on asks of several lines (most asks are one)
        lined = "\n" + ask
        list_items = min(len(_LIST_LINE.findall(lined)), 8) / 8.0
        if len(_OPTION_LINE.findall(lined)) >= 3 and ("b." in ask or "b)" in ask):
            options = 1.0
    choice = body.get("tool_choice")
    fmt = body.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    return (
        _log_scale(t.ask_len, 32),
        _log_scale(t.system_len, 64),
        1.0 if t.system_len else 0.0,
        min(max(t.user_turns - 1, 0), 4) / 4.0,
        1.0 if body.get("tools") else 0.0,
        1.0 if isinstance(choice, dict) or choice == "required" else 0.0,
        1.0 if fmt_type == "json_schema" else 0.0,
        1.0 if fmt_type == "json_object" else 0.0,
        1.0 if (_max_tokens(body) or 10**9) <= 300 else 0.0,
        1.0 if t.has_image else 0.0,
        fences,
        code,
        math_,
        digits,
        numbers,
        questions,
        list_items,
        options,
        non_ascii,
        _doc_with_short_ask(t),
    )


class Found:
    """The word sets of each window, computed once per request."""

    __slots__ = ("ask", "prev", "system", "t")

    def __init__(self, t: Text) -> None:
        self.t = t
        self.ask = set(t.ask_b.translate(_WORD_TABLE).split()) if t.ask_b else set()
        self.system = word_set(t.system) if t.system else set()
        self.prev = word_set(t.prev) if t.prev else set()

    def scope(self, scope: str) -> tuple[str, set[bytes]]:
        t = self.t
        if scope == "ask":
            return t.ask, self.ask
        if scope == "system":
            return t.system, self.system
        if scope == "prev":
            return t.prev, self.prev
        return t.system + "\n" + t.prev + "\n" + t.ask, self.ask | self.system | self.prev


class TermRule(Protocol):
    @property
    def terms(self) -> list[str]: ...
    @property
    def pattern(self) -> str: ...
    @property
    def scope(self) -> str: ...


SCOPES = ("ask", "system", "prev", "any")


class Terms:
    """Term rules compiled into lookups, per scope: a word → the rules it fires; a phrase's
    first word → (rule, the phrase's other words); ``^prefix``, symbol and regex rules."""

    def __init__(self, rules: Sequence[TermRule]) -> None:
        self.n = len(rules)
        self._by_scope: dict[str, _ScopeTerms] = {}
        for i, rule in enumerate(rules):
            scoped = self._by_scope.setdefault(rule.scope, _ScopeTerms())
            for term in rule.terms:
                scoped.add(i, term.lower())
            if rule.pattern:
                scoped.regexes.append((i, re.compile(rule.pattern)))
        for scoped in self._by_scope.values():
            scoped.freeze()

    def matched(self, found: Found) -> set[int]:
        """Indexes of the rules that fire for a request."""
        hits: set[int] = set()
        t = found.t
        for scope, scoped in self._by_scope.items():
            if scope == "ask":  # the common scopes without a method call
                if t.ask:
                    scoped.match(t.ask, found.ask, hits)
            elif scope == "system":
                if t.system:
                    scoped.match(t.system, found.system, hits)
            else:
                text, words = found.scope(scope)
                if text:
                    scoped.match(text, words, hits)
        return hits


@dataclass(slots=True)
class _ScopeTerms:
    words: dict[bytes, list[int]] = field(default_factory=dict)
    phrases: dict[bytes, list[tuple[int, frozenset[bytes], str]]] = field(default_factory=dict)
    symbols: list[tuple[int, str]] = field(default_factory=list)
    starts: list[tuple[int, str]] = field(default_factory=list)
    regexes: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)
    word_keys: frozenset[bytes] = frozenset()
    phrase_keys: frozenset[bytes] = frozenset()

    def add(self, rule: int, term: str) -> None:
        if term.startswith("^"):
            self.starts.append((rule, term[1:]))
            return
        tokens = term.encode("utf-8", "surrogatepass").translate(_WORD_TABLE).split()
        if not tokens:
            self.symbols.append((rule, term))  # e.g. "%": a plain substring test
        elif len(tokens) == 1:
            self.words.setdefault(tokens[0], []).append(rule)
        else:  # a phrase: all of its words in the window (cheap), then the phrase itself
            self.phrases.setdefault(tokens[0], []).append((rule, frozenset(tokens[1:]), term))

    def freeze(self) -> None:
        self.word_keys = frozenset(self.words)
        self.phrase_keys = frozenset(self.phrases)

    def match(self, text: str, words: set[bytes], hits: set[int]) -> None:
        for word in words & self.word_keys:
            hits.update(self.words[word])
        for word in words & self.phrase_keys:
            for rule, rest, phrase in self.phrases[word]:
                if rest <= words and phrase in text:
                    hits.add(rule)
        for rule, symbol in self.symbols:
            if symbol in text:
                hits.add(rule)
        if self.starts:
            head = text.lstrip()
            for rule, prefix in self.starts:
                if head.startswith(prefix):
                    hits.add(rule)
        for rule, regex in self.regexes:
            if regex.search(text):
                hits.add(rule)
