"""How demanding is a request? Features → a fitted rule table → a score in [0, 1] → a tier.

Everything is computed in one pass over bounded windows of the text that matters (the head
and tail of the last user turn, the head of the system prompt and of the previous user turn),
so a 100k-token prompt costs about what a 1k-token one does: long is not the same as hard.

The rule table (``rules.toml`` in the package, or a file produced by ``gearshift calibrate``)
holds, for every feature, its weight; for pattern rules, the compiled regex; and a learned
lexicon (word → weight) beside the hand-made features. At run time: the features, a dot
product, a sigmoid. Weights and tier thresholds are fitted offline (see ``calibrate.py`` and
``docs/routing.md``), never hand-tuned.

A table is two files: the TOML, which people review (bias, thresholds, windows, counter and
term-rule weights, provenance), and the msgpack file it names (``lexicons = ...``, beside it)
with the word maps — ~41k numbers that take ~0.4 s to parse as TOML and ~10 ms as msgpack.
A TOML with the maps inline (the older single-file form) still loads.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import msgspec

from gearshift.routing import tokens
from gearshift.routing.features import (
    COUNTERS,
    SCOPES,
    Found,
    Terms,
    Text,
    counters,
    lexicon_words,
    read_text,
    word_set,
)
from gearshift.routing.risk import PRESETS as PRESETS
from gearshift.routing.risk import RiskMap as RiskMap
from gearshift.routing.risk import RulesError as RulesError
from gearshift.routing.risk import check_risk
from gearshift.routing.structs import Lexicons as Lexicons
from gearshift.routing.structs import PatternRule as PatternRule
from gearshift.routing.structs import RulesFile as RulesFile
from gearshift.routing.structs import Thresholds as Thresholds
from gearshift.routing.structs import Window as Window
from gearshift.routing.structs import _TableFile

# Far beyond any fitted weight; bounds the sum, so a score can never overflow to NaN.
_MAX_WEIGHT = 1e6


_LEXICON_FIELDS = Lexicons.__struct_fields__
_lexicons_decoder = msgspec.msgpack.Decoder(Lexicons)


@dataclass(slots=True)
class Decision:
    """The classifier's verdict: ``score`` ∈ [0, 1], the tier it implies, the estimated
    prompt ``tokens``, and the rules that moved the score most (``reasons``)."""

    score: float
    tier: str
    tokens: int
    reasons: tuple[str, ...]
    hinted: bool = False
    image: bool = False  # the request carries an image (so it needs a vision model)
    risk: float = 0.0  # the calibrated probability that the cheap model falls short
    uncertain: bool = False  # most of the request's words are unknown to the table


class Rules:
    """A loaded, compiled rule table. ``decide`` is the hot path.

    ``shared``: a table with the same weights, word maps and rules whose compiled (read-only)
    maps and sets this one uses rather than building them again (``with_*``: only the
    thresholds or the risk map differ)."""

    def __init__(
        self, spec: RulesFile, source: str = "<rules>", *, shared: Rules | None = None
    ) -> None:
        _check_thresholds(spec.thresholds, source)
        check_risk(spec.risk, source)
        self.spec = spec
        self.source = source
        if shared is None:
            self._compile(spec, source)
        else:
            self._share(shared)
        self._risk_scores = tuple(spec.risk.scores)
        self._risk_values = tuple(spec.risk.risks)
        self._min_words = spec.risk.min_words
        self._min_known = spec.risk.min_known
        self._uncertain = self._leaned(spec.thresholds)

    def _compile(self, spec: RulesFile, source: str) -> None:
        unknown = set(spec.counters) - set(COUNTERS)
        if unknown:
            raise RulesError(f"{source}: unknown counters {sorted(unknown)}")
        for i, rule in enumerate(spec.patterns):
            if rule.scope not in SCOPES:
                raise RulesError(f"{source}: $.patterns[{i}].scope: {rule.scope!r}")
            if not rule.terms and not rule.pattern:
                raise RulesError(f"{source}: $.patterns[{i}] ({rule.id}): no terms or pattern")
            try:
                re.compile(rule.pattern)
            except re.error as exc:
                raise RulesError(
                    f"{source}: $.patterns[{i}] ({rule.id}): bad regex: {exc}"
                ) from None
        scalars = [
            spec.bias,
            spec.prev_lexicon_scale,
            spec.semantic_weight,
            *spec.counters.values(),
            *(p.weight for p in spec.patterns),
        ]
        maps = (spec.lexicon.values(), spec.lead_lexicon.values(), spec.semantic.values())
        if not all(map(_bounded, (scalars, *maps))):
            raise RulesError(
                f"{source}: every bias and weight must be a finite number within ±{_MAX_WEIGHT:g}"
            )
        if not 0.0 <= spec.prev_lexicon_scale <= 1.0:
            raise RulesError(f"{source}: prev_lexicon_scale must be within [0, 1]")
        w = spec.window
        if min(w.ask_head, w.ask_tail, w.system_head, w.prev_head, w.lead) < 0:
            raise RulesError(f"{source}: window sizes must not be negative")
        self._terms = Terms(spec.patterns)
        self._pattern_ids = tuple(p.id for p in spec.patterns)
        self._pattern_weights = tuple(p.weight for p in spec.patterns)
        self._counter_weights = tuple(spec.counters.get(name, 0.0) for name in COUNTERS)
        # Bytes keys: request words are found as bytes, without decoding each one.
        self._lexicon = {word.encode(): weight for word, weight in spec.lexicon.items()}
        # A set, not the dict: `set & frozenset` walks the smaller side only.
        self._lexicon_keys = frozenset(self._lexicon)
        # Rank by |weight|, strongest first: the few words a reason names are found by one
        # C-keyed sort of the matched words, not by sorting every contribution.
        strongest = sorted(self._lexicon, key=lambda w: -abs(self._lexicon[w]))
        self._lexicon_rank = {word: i for i, word in enumerate(strongest)}
        self._lead = {word.encode(): weight for word, weight in spec.lead_lexicon.items()}
        self._lead_keys = frozenset(self._lead)
        self._semantic = {word.encode(): s for word, s in spec.semantic.items()}
        self._semantic_keys = frozenset(self._semantic)
        # The spec's numbers as plain attributes: the hot path reads them on every request.
        self._window = spec.window
        self._bias = spec.bias
        self._prev_scale = spec.prev_lexicon_scale
        self._semantic_weight = spec.semantic_weight if self._semantic else 0.0
        self._lead_chars = spec.window.lead

    def _share(self, other: Rules) -> None:
        self._terms = other._terms
        self._pattern_ids = other._pattern_ids
        self._pattern_weights = other._pattern_weights
        self._counter_weights = other._counter_weights
        self._lexicon = other._lexicon
        self._lexicon_keys = other._lexicon_keys
        self._lexicon_rank = other._lexicon_rank
        self._lead = other._lead
        self._lead_keys = other._lead_keys
        self._semantic = other._semantic
        self._semantic_keys = other._semantic_keys
        self._window = other._window
        self._bias = other._bias
        self._prev_scale = other._prev_scale
        self._semantic_weight = other._semantic_weight
        self._lead_chars = other._lead_chars

    # ------------------------------------------------------------------ risk

    def risk(self, score: float) -> float:
        """The calibrated probability that the cheap model falls short at ``score``."""
        xs, ys = self._risk_scores, self._risk_values
        if not xs:
            return score
        i = bisect.bisect_right(xs, score)
        if i == 0:
            return ys[0]
        if i == len(xs):
            return ys[-1]
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (score - x0) / (x1 - x0) if x1 > x0 else y1

    def score_at_risk(self, risk: float) -> float:
        """The lowest score whose risk is at least ``risk`` (1.0 when none reaches it)."""
        xs, ys = self._risk_scores, self._risk_values
        if not xs:
            return min(1.0, max(0.0, risk))
        if risk <= ys[0]:
            return xs[0] if risk == ys[0] else 0.0
        for i in range(1, len(xs)):
            if ys[i] >= risk:
                y0, y1, x0, x1 = ys[i - 1], ys[i], xs[i - 1], xs[i]
                return x0 + (x1 - x0) * (risk - y0) / (y1 - y0) if y1 > y0 else x0
        return 1.0

    def preset_risk(self, name: str) -> float:
        """The risk a named preset stands for in this table (``RulesError`` if it has none)."""
        try:
            return self.spec.risk.presets[name]
        except KeyError:
            raise RulesError(
                f"{self.source}: no risk preset {name!r} (it has: "
                f"{', '.join(sorted(self.spec.risk.presets)) or 'none'})"
            ) from None

    def with_risk(self, max_risk: float) -> Rules:
        """The same table with the tier thresholds stated as risks: frontier when the risk is
        at least ``max_risk``, standard from the table's share of it (``risk.standard``)."""
        if not 0.0 < max_risk <= 1.0:
            raise RulesError(f"{self.source}: max_risk must be within (0, 1]")
        frontier = self.score_at_risk(max_risk)
        standard = min(frontier, self.score_at_risk(max_risk * self.spec.risk.standard))
        return self.with_thresholds(round(standard, 6), round(frontier, 6))

    def with_lean(self, lean: float) -> Rules:
        """The same table with another ``lean`` for uncertain requests (0: none)."""
        risk = msgspec.structs.replace(self.spec.risk, lean=lean)
        spec = msgspec.structs.replace(self.spec, risk=risk)
        return Rules(spec, self.source, shared=self)

    def _leaned(self, t: Thresholds) -> tuple[float, float]:
        """Thresholds for an uncertain request: the risk it may take cut by ``lean``."""
        keep = 1.0 - self.spec.risk.lean
        frontier = self.score_at_risk(self.risk(t.frontier) * keep)
        standard = self.score_at_risk(self.risk(t.standard) * keep)
        return min(standard, t.standard), min(frontier, t.frontier)

    def with_thresholds(self, standard: float, frontier: float) -> Rules:
        """The same table with other tier thresholds; it shares this one's compiled (read-only)
        maps and sets rather than building them again."""
        thresholds = Thresholds(standard=standard, frontier=frontier)
        spec = msgspec.structs.replace(self.spec, thresholds=thresholds)
        return Rules(spec, self.source, shared=self)

    def features(self, body: Mapping[str, Any]) -> tuple[Text, dict[str, float]]:
        """Every feature's value for ``body`` (used by fitting, explanations and tests)."""
        t = read_text(body, self.spec.window)
        found = Found(t)
        values = dict(zip(COUNTERS, counters(t), strict=True))
        hits = self._terms.matched(found)
        for i, rule_id in enumerate(self._pattern_ids):
            values["re:" + rule_id] = 1.0 if i in hits else 0.0
        for word in lexicon_words(t.ask) | lexicon_words(t.system):
            values["w:" + word] = 1.0
        for word in lexicon_words(t.prev):
            values["p:" + word] = 1.0
        for word in lexicon_words(t.ask[: self.spec.window.lead]):
            values["h:" + word] = 1.0
        if self._semantic:
            values["semantic"] = self._semantic_mean(found)
        return t, values

    def _semantic_mean(self, found: Found) -> float:
        words = (found.ask | found.system | found.prev) & self._semantic_keys
        if not words:
            return 0.0
        return sum(map(self._semantic.__getitem__, words)) / len(words)

    def score(self, body: Mapping[str, Any]) -> tuple[float, Text, list[tuple[float, Any]]]:
        """The score, the text windows, and the contributions a reason may name (see
        ``_evaluate``)."""
        score, t, parts, _ = self._evaluate(body)
        return score, t, parts

    def uncertain(self, body: Mapping[str, Any]) -> bool:
        """Whether the table has little to go on for ``body`` (most words unknown to it)."""
        return self._evaluate(body)[3]

    def _evaluate(
        self, body: Mapping[str, Any]
    ) -> tuple[float, Text, list[tuple[float, Any]], bool]:
        """The score, the text windows, and the contributions a reason may name:
        (weight * value, feature) for every non-zero counter and rule, and the three
        strongest words of each lexicon (the others are summed). A feature is a counter name,
        a rule index (int), or a word (bytes; prefixed ``p:`` when it came from the previous
        turn) — names are built only for the few ``decide`` reports; and whether the request
        is uncertain: ``min_words`` or more words, less than ``min_known`` of them known to
        the semantic lexicon (a language or a vocabulary the table has little data for)."""
        t = read_text(body, self._window)
        parts: list[tuple[float, Any]] = [
            (weight * value, name)
            for name, weight, value in zip(
                COUNTERS, self._counter_weights, counters(t), strict=True
            )
            if weight and value
        ]
        z = self._bias + sum([c for c, _ in parts])
        found = Found(t)
        weights = self._pattern_weights
        for i in self._terms.matched(found):
            if weights[i]:
                parts.append((weights[i], i))
                z += weights[i]
        lexicon = self._lexicon
        main = found.ask | found.system if found.system else found.ask
        hit = main & self._lexicon_keys
        if hit:
            z += sum(map(lexicon.__getitem__, hit))
            parts += [(lexicon[w], w) for w in self._strongest(hit)]
        if found.prev:
            scale = self._prev_scale
            # A word in both the ask and the previous turn counts once, as in the fit.
            hit = (found.prev - main) & self._lexicon_keys
            if hit:
                z += scale * sum(map(lexicon.__getitem__, hit))
                parts += [(lexicon[w] * scale, b"p:" + w) for w in self._strongest(hit)]
        if self._lead:
            lead = self._lead
            hit = word_set(t.ask[: self._lead_chars]) & self._lead_keys
            if hit:
                z += sum(map(lead.__getitem__, hit))
                top = sorted(hit, key=lambda w: -abs(lead[w]))[:3]
                parts += [(lead[w], b"h:" + w) for w in top]
        uncertain = False
        if self._semantic_weight:
            every = main | found.prev if found.prev else main
            words = every & self._semantic_keys
            if len(every) >= self._min_words:
                uncertain = len(words) < self._min_known * len(every)
            if words:
                value = sum(map(self._semantic.__getitem__, words)) / len(words)
                if value:
                    parts.append((self._semantic_weight * value, "semantic"))
                    z += self._semantic_weight * value
        return _sigmoid(z), t, parts, uncertain

    def _strongest(self, words: set[bytes]) -> list[bytes]:
        if len(words) <= 3:
            return list(words)
        return sorted(words, key=self._lexicon_rank.__getitem__)[:3]

    def feature_name(self, feature: Any) -> str:
        if isinstance(feature, int):
            return self._pattern_ids[feature]
        if isinstance(feature, bytes):
            text = feature.decode()
            return text if text.startswith(("p:", "h:")) else "w:" + text
        return str(feature)

    def tier_for(
        self,
        score: float,
        tiers: tuple[str, ...] = ("light", "standard", "frontier"),
        thresholds: tuple[float, float] | None = None,
    ) -> str:
        """The weakest tier whose threshold ``score`` stays under; tiers ordered weakest first.

        The thresholds are named: a list holding ``frontier`` (and ``standard``) maps onto
        those names, below them the weakest tier (higher tiers only by hint). A list without
        those names spreads the score over its tiers.
        """
        if thresholds is None:
            standard, frontier = self.spec.thresholds.standard, self.spec.thresholds.frontier
        else:
            standard, frontier = thresholds
        if "frontier" in tiers:
            if score >= frontier:
                return "frontier"
            if score >= standard and "standard" in tiers:
                return "standard"
            return tiers[0]
        if score >= frontier:
            return tiers[-1]
        if score < standard or len(tiers) < 3:
            return tiers[0]
        span = (score - standard) / max(1e-9, frontier - standard)
        return tiers[1 + min(len(tiers) - 3, int(span * (len(tiers) - 2)))]

    def decide(
        self, body: Mapping[str, Any], tiers: tuple[str, ...] = ("light", "standard", "frontier")
    ) -> Decision:
        """Classify a request body: score, tier, prompt tokens (estimated), top reasons."""
        score, t, parts, uncertain = self._evaluate(body)
        # The three largest contributions; the key is a C method, not a Python lambda.
        magnitude = [abs(c) for c, _ in parts]
        top = sorted(range(len(parts)), key=magnitude.__getitem__, reverse=True)[:3]
        reasons = tuple(
            f"{self.feature_name(parts[i][1])}{'+' if parts[i][0] > 0 else '-'}" for i in top
        )
        tier = self.tier_for(score, tiers)
        if uncertain:
            # Little to go on: the thresholds of a smaller accepted risk; said when it moved.
            leaned = self.tier_for(score, tiers, self._uncertain)
            if leaned != tier:
                tier = leaned
                reasons = ("uncertain+", *reasons[:2])
        return Decision(
            score=round(score, 4),
            tier=tier,
            risk=round(self.risk(score), 4),
            uncertain=uncertain,
            tokens=tokens.estimate_chars(
                t.total_chars + _tool_chars(body), ascii=t.ask.isascii() and t.system.isascii()
            ),
            reasons=reasons,
            image=t.has_image,
        )


def _tool_chars(body: Mapping[str, Any]) -> int:
    tools = body.get("tools") if isinstance(body, Mapping) else None
    if not isinstance(tools, list) or not tools:
        return 0
    return len(msgspec.json.encode(tools))


def _check_thresholds(t: Thresholds, source: str) -> None:
    if not 0.0 <= t.standard <= t.frontier <= 1.0:
        raise RulesError(f"{source}: thresholds must satisfy 0 <= standard <= frontier <= 1")


def _bounded(values: Collection[float]) -> bool:
    """Every value finite and within ±_MAX_WEIGHT, checked in C loops (the semantic lexicon
    has ~38k): a NaN or an infinity makes the sum non-finite, and bounded values cannot
    overflow it."""
    return not values or (
        math.isfinite(sum(values)) and min(values) >= -_MAX_WEIGHT and max(values) <= _MAX_WEIGHT
    )


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def decode_rules(data: bytes, source: str, directory: Traversable | None = None) -> RulesFile:
    """A table from its TOML text; the lexicons file it names is read from ``directory``."""
    try:
        table = msgspec.toml.decode(data, type=_TableFile)
    except msgspec.ValidationError as exc:
        raise RulesError(f"{source}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    fields = {name: getattr(table, name) for name in RulesFile.__struct_fields__}
    if not table.lexicons:
        if table.lexicons_sha256:
            raise RulesError(f"{source}: lexicons_sha256 without a lexicons file")
        return RulesFile(**fields)
    if any(fields[name] for name in _LEXICON_FIELDS):
        raise RulesError(
            f"{source}: names a lexicons file and has inline lexicons too; keep one of them"
        )
    if directory is None:
        raise RulesError(f"{source}: names a lexicons file, but its directory is not known")
    maps = read_lexicons(directory / table.lexicons, table.lexicons_sha256, source)
    fields.update((name, getattr(maps, name)) for name in _LEXICON_FIELDS)
    return RulesFile(**fields)


def read_lexicons(path: Traversable, sha256: str, source: str) -> Lexicons:
    """The word maps in the msgpack file at ``path``, checked against its ``sha256`` (hex;
    empty: not checked); ``source`` is the table that names the file."""
    where = f"{source}: its lexicons file {path}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RulesError(f"{where}: cannot read: {exc.strerror}") from None
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise RulesError(
            f"{where}: does not match lexicons_sha256 (a table and its lexicons are written "
            "together, by `gearshift calibrate`)"
        )
    try:
        return _lexicons_decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise RulesError(f"{where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise RulesError(f"{where}: not valid msgpack: {exc}") from None


def load_rules(path: str | Path | None = None) -> Rules:
    """The shipped table (``rules.toml`` in the package) or the one at ``path``."""
    if path is None:
        return _shipped()
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from None
    return Rules(decode_rules(data, str(path), Path(path).parent), str(path))


@cache
def _shipped() -> Rules:
    # Loaded once per process (~55 ms, most of it the ~41k words of the lexicons file:
    # decoding them, keying them by bytes, their sets); read-only.
    package = resources.files("gearshift.routing")
    data = package.joinpath("rules.toml").read_bytes()
    return Rules(decode_rules(data, "<shipped rules>", package), "<shipped rules>")
