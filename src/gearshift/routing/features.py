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
_MATH_BYTES_AT = re.compile(rb"\xe2[\x88\x89]|\xc2\xb1|\xcf\x80")
# The lead bytes of the spaceless scripts' characters (U+3040-U+D7AF, U+F900-U+FAFF), or
# near them: a cheap test before the regex over characters.
_SPACELESS_LEAD = re.compile(rb"[\xe3-\xed]|\xef[\xa4-\xab]")
# List and option lines: anchored on a literal newline (the regex engine then jumps from one
# newline to the next; ``(?m)^`` would try every position). Matched against "\n" + ask.
_LIST_LINE = re.compile(r"\n\s*(?:\d{1,2}[.)]|[-*•]|\([a-z]\))(?=\s)")
_OPTION_LINE = re.compile(r"\n\s*\(?[a-d][.)](?=\s)")
_FILE_NAME = re.compile(
    r"\b[\w/-]+\.(?:py|js|jsx|ts|tsx|go|rs|java|kt|c|cc|cpp|h|hpp|cs|rb|php|swift|scala|sql"
    r"|ya?ml|toml|json|sh|tf|proto|vue)\b"
)
# Beyond ASCII (only asks that are not pure ASCII pay for these): words are runs of letters,
# ' and - in any script; scripts written without spaces between words (Chinese, Japanese) and
# Korean, whose words carry their particles, are read as overlapping pairs of characters
# ("word pieces": 要約してください -> 要約, 約し, して, ...), so that a term or a lexicon
# entry of two characters is found wherever it occurs.
_SPACELESS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_SPACELESS_RUN = re.compile(f"[{_SPACELESS}]+")
# Bytes beyond ASCII that are not letters: Latin-1 punctuation and signs (¡ « » ¿ · ° nbsp),
# the multiplication and division signs, everything of U+2000-U+2FFF (punctuation, symbols,
# arrows, math), CJK and fullwidth punctuation, variation selectors, emoji.
_NON_LETTER = re.compile(
    rb"\xc2[\x80-\xbf]|\xc3[\x97\xb7]|\xe2[\x80-\xbf][\x80-\xbf]|\xe3\x80[\x80-\xbf]"
    rb"|\xef(?:\xb8[\x80-\x8f]|\xbc[\x80-\xbf]|\xbd[\x80-\xbf])|\xf0[\x80-\xbf]{3}"
)
_LETTER_TABLE = bytes(c if c in _KEEP or c >= 0x80 else 32 for c in range(256))


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
    # A long paste's instruction: the ask's first or last paragraph when it is short (a
    # reading task's ask, whose verbs say whether it is mechanical or a judgment); else "".
    instr: str = ""
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
        if out.ask_len >= 1500:
            out.instr = _instruction(out.ask)
    return out


def _instruction(ask: str) -> str:
    first = ask.find("\n\n")
    if first < 0:
        return ask if len(ask) < 300 else ""
    if first < 300:
        return ask[:first]
    last = ask.rfind("\n\n") + 2
    return ask[last:] if len(ask) - last < 300 else ""


def tokens(text: str) -> list[bytes]:
    """The word tokens of a lower-cased window, in order (bytes, for set lookups): runs of
    a-z, ' and - for ASCII text (one ``translate`` and ``split``); for other text, runs of
    letters of any script, and pairs of characters for scripts written without spaces."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) == len(text):
        return data.translate(_WORD_TABLE).split()
    return _unicode_tokens(text)


# Pairs of characters read per window at most: the first 120 and the last 40 characters of
# its spaceless runs (a window of such text holds ~700 pairs, ~0.2 µs each to cut and look
# up: the cap keeps a Japanese request's decision within a few times an English one's).
_PAIRS_HEAD, _PAIRS_TAIL = 120, 40


def _unicode_tokens(text: str) -> list[bytes]:
    runs = _SPACELESS_RUN.findall(text)
    if runs:
        text = _SPACELESS_RUN.sub(" ", text)
    # Letters of any script are bytes >= 0x80 in UTF-8: one table keeps them with a-z ' -,
    # after the symbols and punctuation beyond ASCII are blanked (a regex over characters
    # costs ~50 µs a window; this ~10).
    data = text.encode("utf-8", "surrogatepass")
    if (
        b"\xe2" in data
        or b"\xc2" in data
        or b"\xc3\x97" in data
        or b"\xc3\xb7" in data
        or b"\xe3\x80" in data
        or b"\xef" in data
        or b"\xf0" in data
    ):
        data = _NON_LETTER.sub(b" ", data)
    out = data.translate(_LETTER_TABLE).split()
    if not runs:
        return out
    if sum(map(len, runs)) > _PAIRS_HEAD + _PAIRS_TAIL:
        runs = _capped(runs)
    for run in runs:
        # Every character of these scripts is 3 bytes of UTF-8: pairs are 6-byte slices at
        # steps of 3 of one encoded run (no per-pair encode).
        data = run.encode()
        if len(run) < 3:
            out.append(data)
        else:
            out += [data[i : i + 6] for i in range(0, len(data) - 3, 3)]
    return out


def _capped(runs: list[str]) -> list[str]:
    """The parts of ``runs`` within their first ``_PAIRS_HEAD`` and last ``_PAIRS_TAIL``
    characters (counted over the runs together)."""
    total = sum(map(len, runs))
    tail_from = total - _PAIRS_TAIL
    out: list[str] = []
    at = 0
    for run in runs:
        end = at + len(run)
        if at < _PAIRS_HEAD:
            out.append(run[: _PAIRS_HEAD - at])
        if end > tail_from:
            out.append(run[max(0, tail_from - at) :])
        at = end
    return out


def word_set(text: str) -> set[bytes]:
    """The distinct word tokens of a lower-cased window (see ``tokens``)."""
    if not text:
        return set()
    return set(tokens(text))


def lexicon_words(text: str) -> set[str]:
    """The words a lexicon may learn: tokens of 2+ bytes starting with a letter (a-z or
    the lead byte of a character beyond ASCII)."""
    return {
        w.decode() for w in word_set(text) if len(w) > 1 and (97 <= w[0] <= 122 or w[0] >= 0xC0)
    }


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
    "spaceless",
    "code_files",
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
    non_ascii = spaceless = 0.0
    if size != len(ask):
        if _MATH_BYTES_AT.search(ask_b):  # the signs below live in these few byte pairs
            math_ = min(1.0, math_ + sum(ask.count(c) for c in _MATH_UNICODE) / len(ask) * 10)
        non_ascii = min(1.0, (size - len(ask)) / max(1, len(ask)) * 3)
        if _SPACELESS_LEAD.search(ask_b):
            spaceless = min(1.0, sum(map(len, _SPACELESS_RUN.findall(ask))) / len(ask) * 2)
    files = 0.0
    # File names (`app/models.py`, `Cart.tsx`): a change across files. Read in pasted code
    # blocks only (the regex costs ~25 µs on a window of code).
    if fences >= 0.5 and "." in ask:
        files = min(len(set(_FILE_NAME.findall(ask))), 4) / 4.0
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
        spaceless,
        files,
    )


class Found:
    """The word sets of each window, computed once per request."""

    __slots__ = ("_instr", "ask", "prev", "system", "t")

    def __init__(self, t: Text) -> None:
        self.t = t
        ask_b = t.ask_b
        if len(ask_b) == len(t.ask):  # ASCII: the common case, without a call
            self.ask = set(ask_b.translate(_WORD_TABLE).split()) if ask_b else set()
        else:
            self.ask = set(_unicode_tokens(t.ask))
        self.system = word_set(t.system) if t.system else set()
        self.prev = word_set(t.prev) if t.prev else set()
        self._instr: set[bytes] | None = None

    def scope(self, scope: str) -> tuple[str, set[bytes]]:
        t = self.t
        if scope == "ask":
            return t.ask, self.ask
        if scope == "system":
            return t.system, self.system
        if scope == "prev":
            return t.prev, self.prev
        if scope == "instr":
            if self._instr is None:
                self._instr = word_set(t.instr)
            return t.instr, self._instr
        return t.system + "\n" + t.prev + "\n" + t.ask, self.ask | self.system | self.prev


class TermRule(Protocol):
    @property
    def terms(self) -> list[str]: ...
    @property
    def pattern(self) -> str: ...
    @property
    def scope(self) -> str: ...


SCOPES = ("ask", "system", "prev", "instr", "any")


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
    # ``starts`` by their first two characters: a window's opening picks its few candidates
    # (the look-up openings of eleven languages are ~130 prefixes).
    starts_by_head: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    short_starts: bool = False
    regexes: list[tuple[int, re.Pattern[str]]] = field(default_factory=list)
    word_keys: frozenset[bytes] = frozenset()
    phrase_keys: frozenset[bytes] = frozenset()

    def add(self, rule: int, term: str) -> None:
        if term.startswith("^"):
            self.starts.append((rule, term[1:]))
            return
        found = tokens(term)  # as a request's words are found, in any script
        if not found:
            self.symbols.append((rule, term))  # e.g. "%": a plain substring test
        elif len(found) == 1 and (term.isascii() or found[0].decode() == term):
            self.words.setdefault(found[0], []).append(rule)
        else:  # a phrase: all of its words in the window (cheap), then the phrase itself
            self.phrases.setdefault(found[0], []).append((rule, frozenset(found[1:]), term))

    def freeze(self) -> None:
        self.word_keys = frozenset(self.words)
        self.phrase_keys = frozenset(self.phrases)
        for rule, prefix in self.starts:
            if len(prefix) >= 2:
                self.starts_by_head.setdefault(prefix[:2], []).append((rule, prefix))
        self.short_starts = any(len(prefix) < 2 for _, prefix in self.starts)

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
            candidates = self.starts_by_head.get(head[:2])
            if candidates:
                for rule, prefix in candidates:
                    if head.startswith(prefix):
                        hits.add(rule)
            if self.short_starts:  # prefixes of fewer than two characters (rare)
                for rule, prefix in self.starts:
                    if len(prefix) < 2 and head.startswith(prefix):
                        hits.add(rule)
        for rule, regex in self.regexes:
            if regex.search(text):
                hits.add(rule)
