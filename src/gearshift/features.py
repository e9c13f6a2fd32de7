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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gearshift.request import content_text

_KEEP = frozenset(range(ord("a"), ord("z") + 1)) | {ord("'"), ord("-")}
# Letters a-z, ' and - stay; every other byte (digits, punctuation, UTF-8) splits words.
_WORD_TABLE = bytes(c if c in _KEEP else 32 for c in range(256))
_DIGITS_TABLE = bytes(48 if 48 <= c <= 57 or c == 46 else 32 for c in range(256))
_CODE_BYTES = b"{};()[]=<>_"
_MATH_BYTES = b"^=+*/<>"
_MATH_UNICODE = "√∫∑∏≤≥≠±π∞"
_OPTION_LINE = re.compile(r"(?m)^\s*\(?[a-d][.)]\s")
_LIST_LINE = re.compile(r"(?m)^\s*(?:\d{1,2}[.)]|[-*•]|\([a-z]\))\s")


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


def _density(b: bytes, chars: bytes) -> float:
    if not b:
        return 0.0
    return min(1.0, (len(b) - len(b.translate(None, chars))) / len(b) * 10.0)


def _math_density(t: Text) -> float:
    ascii_part = _density(t.ask_b, _MATH_BYTES)
    if t.ask.isascii():
        return ascii_part
    return min(1.0, ascii_part + sum(t.ask.count(c) for c in _MATH_UNICODE) / len(t.ask) * 10)


def _max_tokens(body: Mapping[str, Any]) -> int | None:
    value = body.get("max_completion_tokens") or body.get("max_tokens")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _format_type(body: Mapping[str, Any]) -> str | None:
    fmt = body.get("response_format")
    return fmt.get("type") if isinstance(fmt, dict) else None


def _doc_with_short_ask(t: Text) -> float:
    # A long paste whose instruction (first or last paragraph) is short: a reading task.
    if t.ask_len < 1500:
        return 0.0
    first = t.ask.split("\n\n", 1)[0]
    last = t.ask.rsplit("\n\n", 1)[-1]
    return 1.0 if min(len(first), len(last)) < 300 else 0.0


def _numbers(t: Text) -> float:
    return min(len(t.ask_b.translate(_DIGITS_TABLE).split()), 16) / 16.0


def _list_items(t: Text) -> float:
    # The regex only runs on asks of several lines (most asks are one).
    if "\n" not in t.ask:
        return 0.0
    return min(len(_LIST_LINE.findall(t.ask)), 8) / 8.0


def _options(t: Text) -> float:
    if "\n" not in t.ask or ("b." not in t.ask and "b)" not in t.ask):
        return 0.0
    return 1.0 if len(_OPTION_LINE.findall(t.ask)) >= 3 else 0.0


def _non_ascii(t: Text) -> float:
    if t.ask.isascii():
        return 0.0
    return min(1.0, (len(t.ask_b) - len(t.ask)) / max(1, len(t.ask)) * 3)


def _tool_choice_forced(t: Text) -> float:
    choice = t.body.get("tool_choice")
    return 1.0 if isinstance(choice, dict) or choice == "required" else 0.0


# Hand-made counters: structure, not vocabulary. Their weights are fitted like the rest.
COUNTERS: dict[str, Callable[[Text], float]] = {
    "ask_chars": lambda t: _log_scale(t.ask_len, 32),
    "system_chars": lambda t: _log_scale(t.system_len, 64),
    "has_system": lambda t: 1.0 if t.system_len else 0.0,
    "depth": lambda t: min(max(t.user_turns - 1, 0), 4) / 4.0,
    "tools": lambda t: 1.0 if t.body.get("tools") else 0.0,
    "tool_choice_forced": _tool_choice_forced,
    "json_schema": lambda t: 1.0 if _format_type(t.body) == "json_schema" else 0.0,
    "json_object": lambda t: 1.0 if _format_type(t.body) == "json_object" else 0.0,
    "max_tokens_small": lambda t: 1.0 if (_max_tokens(t.body) or 10**9) <= 300 else 0.0,
    "image": lambda t: 1.0 if t.has_image else 0.0,
    "code_fence": lambda t: min(t.ask.count("```"), 4) / 4.0,
    "code_chars": lambda t: _density(t.ask_b, _CODE_BYTES),
    "math_chars": _math_density,
    "digits": lambda t: _density(t.ask_b, b"0123456789"),
    "numbers": _numbers,
    "questions": lambda t: min(t.ask.count("?"), 4) / 4.0,
    "list_items": _list_items,
    "options": _options,
    "non_ascii": _non_ascii,
    "doc_short_ask": _doc_with_short_ask,
}


class Found:
    """The word sets of each window, computed once per request."""

    __slots__ = ("ask", "prev", "system", "t")

    def __init__(self, t: Text) -> None:
        self.t = t
        self.ask = set(t.ask_b.translate(_WORD_TABLE).split()) if t.ask_b else set()
        self.system = word_set(t.system)
        self.prev = word_set(t.prev)

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
        for scope, scoped in self._by_scope.items():
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
