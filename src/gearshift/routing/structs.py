"""The rule table's file formats, as msgspec structs: the table (``RulesFile``: weights,
term rules, windows, thresholds, word maps), its risk map and the word maps' msgpack file.

Kept apart from the code that reads and scores them (``classify``, ``risk``): those modules
may be compiled with mypyc (``setup.py``), which does not keep a struct's class options
(``frozen``, ``forbid_unknown_fields``); this one is always plain Python.
"""

from __future__ import annotations

import msgspec


class RiskMap(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What a score means: knots of a monotone piecewise-linear map from score to the
    probability that the cheap model falls short (isotonic regression on held-out scores,
    fitted by ``gearshift calibrate``); ``presets`` name risks (``safe``, ``balanced``,
    ``thrifty``) and ``lean`` is how far an uncertain request's accepted risk is cut.
    Empty: the score is read as the risk itself."""

    scores: list[float] = []
    risks: list[float] = []
    presets: dict[str, float] = {}
    # Standard starts at this share of the frontier risk (fitted: where the held-out recall
    # of frontier rows reaches halfway between the frontier target and 1).
    standard: float = 0.5
    lean: float = 0.5
    min_words: int = 4  # a request with fewer words in its windows is never "uncertain"
    min_known: float = 0.5  # ... nor one with at least this share known to the lexicons


class PatternRule(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A hand-made feature: 1 when any of ``terms`` (or the regex ``pattern``) is found in
    the lower-cased window of ``scope``.

    A term is a word (``proof``), a phrase with spaces or punctuation (``step by step``,
    matched as a substring) or ``^phrase`` (the text starts with it). Terms are set and
    substring tests, far cheaper than a regex; ``pattern`` is there for what they cannot say.
    """

    id: str
    terms: list[str] = []
    pattern: str = ""
    weight: float = 0.0
    scope: str = "ask"  # ask | system | prev | any


class Thresholds(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Score cut-offs, ascending: ``score >= standard`` needs standard, ``>= frontier``..."""

    standard: float = 0.35
    frontier: float = 0.5


class Window(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    ask_head: int = 700
    ask_tail: int = 300
    system_head: int = 400
    prev_head: int = 300
    lead: int = 0  # chars at the opening of the ask with their own lexicon (0: off)


class RulesFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    version: int = 1
    bias: float = 0.0
    thresholds: Thresholds = Thresholds()
    window: Window = Window()
    counters: dict[str, float] = {}
    patterns: list[PatternRule] = []
    lexicon: dict[str, float] = {}
    lead_lexicon: dict[str, float] = {}
    # The semantic lexicon: a score per word, distilled offline from a sentence-embedding
    # model (bench/semantic.py); the feature is the mean score of the window's words.
    semantic: dict[str, float] = {}
    semantic_weight: float = 0.0
    prev_lexicon_scale: float = 0.5
    risk: RiskMap = RiskMap()
    provenance: dict[str, str] = {}


class Lexicons(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A table's word maps, as its msgpack file holds them (the fields of ``RulesFile``)."""

    lexicon: dict[str, float] = {}
    lead_lexicon: dict[str, float] = {}
    semantic: dict[str, float] = {}


class _TableFile(RulesFile, frozen=True, forbid_unknown_fields=True):
    """A table's TOML as written: ``lexicons`` names the msgpack file with its word maps
    (relative to the TOML's directory) and ``lexicons_sha256`` is that file's digest; both
    are empty when the maps are inline."""

    lexicons: str = ""
    lexicons_sha256: str = ""
