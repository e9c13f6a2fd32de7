"""Labeled requests: the two schemas of labeled rows (one JSON object per line), read as
``Example``s, and a request's score from its text or from stored features.

- outcomes (``../shared/data/routing-dev/`` mt_bench, gsm8k, mmlu_sample): ``prompt``,
  ``previous_user_turn``, ``weak_score``, ``strong_score``, ``weak_suffices``;
- tiers (app_workload and gearshift's own ``bench/routing/*.jsonl``, and the outcome
  store's rows): ``request`` (a whole OpenAI body) and ``tier`` (``light`` or ``frontier``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gearshift.offline.languages import language_of
from gearshift.routing.classify import Rules


@dataclass(slots=True)
class Example:
    """One labeled request: ``strong`` is 1 when the strong model is needed."""

    id: str
    dataset: str
    group: str
    body: dict[str, Any]
    strong: int
    weak_score: float
    strong_score: float
    category: str = ""
    judged: bool = False  # a tier by judgment ("tiers" schema), not a measured outcome
    language: str = "en"  # the row's ``language``, else a guess (offline/languages.py)
    # Stored features instead of a text to compute them from (a redacted outcome-store row):
    # scored by ``score_features``.
    features: dict[str, float] | None = None


def score_features(rules: Rules, f: Mapping[str, float]) -> float:
    """The score ``rules`` gives a request whose features (``Rules.features``) are ``f``: the
    same sum as ``Rules.score`` without the text (a word in the ask and the previous turn
    counts once; no lean for uncertain requests)."""
    spec = rules.spec
    z = spec.bias + sum(w * f.get(c, 0.0) for c, w in spec.counters.items())
    z += sum(p.weight for p in spec.patterns if f.get("re:" + p.id))
    main = {k[2:] for k in f if k.startswith("w:")}
    lexicon = spec.lexicon
    z += sum(lexicon.get(w, 0.0) for w in main)
    prev = {k[2:] for k in f if k.startswith("p:")} - main
    z += spec.prev_lexicon_scale * sum(lexicon.get(w, 0.0) for w in prev)
    z += sum(spec.lead_lexicon.get(k[2:], 0.0) for k in f if k.startswith("h:"))
    if spec.semantic:
        z += spec.semantic_weight * f.get("semantic", 0.0)
    if z >= 0:  # (as Rules.score)
        return 1.0 / (1.0 + math.exp(-z))
    return math.exp(z) / (1.0 + math.exp(z))


def score_of(rules: Rules, e: Example) -> float:
    """``e``'s score: from its text, or from its stored features."""
    return rules.score(e.body)[0] if e.features is None else score_features(rules, e.features)


def example_from_row(row: dict[str, Any], dataset: str, line: int) -> Example:
    """Either schema → an ``Example``; a tier row scores 1 for a right model, 0 for a wrong."""
    rid = str(row.get("id", line))
    if "request" in row:
        body = row["request"]
        tier = row.get("tier")
        if tier not in ("light", "frontier") or not isinstance(body, dict):
            raise ValueError(f"line {line}: needs a request object and tier light|frontier")
        strong = 1 if tier == "frontier" else 0
        return Example(
            rid,
            dataset,
            rid,
            body,
            strong,
            float(1 - strong),
            1.0,
            str(row.get("task") or row.get("category") or ""),
            judged=True,
        )
    messages: list[dict[str, Any]] = []
    if row.get("previous_user_turn"):
        messages += [
            {"role": "user", "content": row["previous_user_turn"]},
            {"role": "assistant", "content": "(previous answer)"},
        ]
    messages.append({"role": "user", "content": row["prompt"]})
    if not isinstance(row["weak_suffices"], bool) or not isinstance(row["prompt"], str):
        raise ValueError(f"line {line}: weak_suffices must be a boolean, prompt a string")
    strong = 0 if row["weak_suffices"] else 1
    # The turns of one conversation ("81/turn1", "81/turn2") stay in one fold, and so do
    # the rows of one prompt answered by several weak models (alpaca_eval, m_ifeval).
    if "/turn" in rid:
        group = rid.split("/")[0]
    else:
        group = str(row.get("previous_user_turn") or "") + "\n--\n" + row["prompt"]
    return Example(
        rid,
        dataset,
        group,
        {"model": "auto", "messages": messages},
        strong,
        float(row["weak_score"]),
        float(row["strong_score"]),
        str(row.get("category", "")),
    )


def load_examples(paths: Iterable[str | Path]) -> list[Example]:
    out: list[Example] = []
    for path in paths:
        p = Path(path)
        for i, line in enumerate(p.read_bytes().splitlines(), 1):
            if line.strip():
                row = orjson.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"{p}:{i}: a row must be a JSON object")
                try:
                    example = example_from_row(row, p.stem, i)
                    example.language = language_of(row, example.body)
                    out.append(example)
                except (KeyError, ValueError, TypeError) as exc:
                    raise ValueError(f"{p}:{i}: {exc}") from None
    return out
