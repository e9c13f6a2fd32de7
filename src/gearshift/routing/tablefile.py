"""Writing a rule table: the TOML people review (``encode_rules``) and the msgpack file with
its word maps beside it (``encode_lexicons``), tied by the latter's digest (``write_rules``).
Reading them is ``classify.load_rules``; only the offline tools write tables."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from gearshift.routing.classify import _LEXICON_FIELDS, Lexicons, RulesFile
from gearshift.routing.risk import encode_risk


def lexicons_path(path: str | Path) -> Path:
    """Where ``write_rules`` puts the lexicons of a table at ``path``: beside it, named
    after it (``my.toml`` → ``my.lexicons.msgpack``)."""
    path = Path(path)
    return path.with_name(path.stem + ".lexicons.msgpack")


def write_rules(spec: RulesFile, path: str | Path, header: Iterable[str] = ()) -> Path:
    """Write the table to ``path`` (TOML, naming its lexicons file) and its word maps to
    ``lexicons_path(path)`` (msgpack); returns the latter. Each file is replaced whole (a
    temporary file renamed over it), the lexicons first: a table read in between (a reload)
    finds the digests disagree and is refused, never half a file."""
    data = encode_lexicons(spec)
    sibling = lexicons_path(path)
    _replace(sibling, data)
    digest = hashlib.sha256(data).hexdigest()
    _replace(Path(path), encode_rules(spec, header, lexicons=sibling.name, lexicons_sha256=digest))
    return sibling


def _replace(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def encode_lexicons(spec: RulesFile) -> bytes:
    """The msgpack file of ``spec``'s word maps, words sorted (a table has one encoding).
    Floats are written as 64-bit doubles, so every weight reads back exactly."""
    return msgspec.msgpack.encode(
        Lexicons(**{name: dict(sorted(getattr(spec, name).items())) for name in _LEXICON_FIELDS})
    )


def _q(text: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return msgspec.json.encode(text).decode()


def encode_rules(
    spec: RulesFile, header: Iterable[str] = (), lexicons: str = "", lexicons_sha256: str = ""
) -> bytes:
    """Readable TOML for a rules table, with ``header`` lines as comments on top. Given a
    ``lexicons`` file name (and its digest), the word maps are left to that file (see
    ``write_rules``); otherwise they are written inline."""
    out = [f"# {line}" for line in header]
    out += [
        f"version = {spec.version}",
        f"bias = {spec.bias!r}",
        f"prev_lexicon_scale = {spec.prev_lexicon_scale!r}",
        # Written only when used, so that tables without one stay readable by older builds.
        *([f"semantic_weight = {spec.semantic_weight!r}"] if spec.semantic else []),
    ]
    if lexicons:
        out += [
            "",
            f"# The word maps ({len(spec.lexicon)} lexicon words, {len(spec.lead_lexicon)} "
            f"lead-lexicon words, {len(spec.semantic)} semantic word scores)",
            "# are in this msgpack file beside this one; the digest ties the two files together.",
            f"lexicons = {_q(lexicons)}",
            f"lexicons_sha256 = {_q(lexicons_sha256)}",
        ]
    out += ["", "[provenance]"]
    out += [f"{_q(k)} = {_q(v)}" for k, v in spec.provenance.items()]
    t, w = spec.thresholds, spec.window
    out += [
        "",
        "[thresholds]",
        f"standard = {t.standard!r}",
        f"frontier = {t.frontier!r}",
        *encode_risk(spec.risk),
        "",
        "[window]",
        f"ask_head = {w.ask_head}",
        f"ask_tail = {w.ask_tail}",
        f"system_head = {w.system_head}",
        f"prev_head = {w.prev_head}",
        f"lead = {w.lead}",
        "",
        "# Hand-made structural counters (see classify.COUNTERS) and their fitted weights.",
        "[counters]",
    ]
    out += [f"{name} = {weight!r}" for name, weight in spec.counters.items()]
    for rule in spec.patterns:
        out += ["", "[[patterns]]", f"id = {_q(rule.id)}", f"scope = {_q(rule.scope)}"]
        if rule.terms:
            out.append("terms = [" + ", ".join(_q(term) for term in rule.terms) + "]")
        if rule.pattern:
            out.append(f"pattern = {_q(rule.pattern)}")
        out.append(f"weight = {rule.weight!r}")
    if lexicons:
        return ("\n".join(out) + "\n").encode()
    out += [
        "",
        "# Learned lexicon: word present in the ask or system prompt -> weight.",
        "[lexicon]",
    ]
    out += [f"{_q(word)} = {weight!r}" for word, weight in sorted(spec.lexicon.items())]
    out += [
        "",
        "# Learned lead lexicon: word in the opening of the ask -> weight.",
        "[lead_lexicon]",
    ]
    out += [f"{_q(word)} = {weight!r}" for word, weight in sorted(spec.lead_lexicon.items())]
    if spec.semantic:
        out += [
            "",
            "# Semantic lexicon: word -> score distilled from sentence embeddings; the",
            "# feature is the mean over the window's words, times semantic_weight.",
            "[semantic]",
        ]
        out += [f"{_q(word)} = {score!r}" for word, score in sorted(spec.semantic.items())]
    return ("\n".join(out) + "\n").encode()
