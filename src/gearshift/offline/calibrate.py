"""Fitting and measuring the rule table on labeled requests (``offline/examples.py``: the
labeled rows; ``offline/measures.py``: AUC, PGR, APGR; both re-exported here).

``fit`` is an L2-regularised logistic regression over the table's features (hand-made
counters and patterns, plus a lexicon of words seen in enough rows), each dataset weighted
equally so a large homogeneous set does not drown the rest. It needs numpy (the ``fit``
extra). ``auc``, ``apgr`` and ``pgr`` are the routing-quality measures of
``../shared/data/routing-dev/README.md``; they are pure Python.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Re-exported: what callers of this module read from it.
from gearshift.offline.examples import Example as Example
from gearshift.offline.examples import example_from_row as example_from_row
from gearshift.offline.examples import load_examples as load_examples
from gearshift.offline.examples import score_features as score_features
from gearshift.offline.examples import score_of as score_of
from gearshift.offline.measures import apgr as apgr
from gearshift.offline.measures import auc as auc
from gearshift.offline.measures import pgr_at as pgr_at
from gearshift.offline.measures import threshold_report as threshold_report
from gearshift.offline.measures import top_shares as top_shares
from gearshift.offline.risk import isotonic, recall_threshold, widened
from gearshift.routing.classify import Rules, RulesFile, Thresholds
from gearshift.routing.risk import RiskMap

# ---------------------------------------------------------------- fitting


@dataclass(slots=True)
class Design:
    """Feature columns: hand-made ones first, then lexicon words."""

    columns: list[str]
    index: dict[str, int]
    n_fixed: int


def features_of(rules: Rules, examples: Sequence[Example]) -> list[dict[str, float]]:
    return [rules.features(e.body)[1] if e.features is None else e.features for e in examples]


def design(
    feats: Sequence[dict[str, float]],
    min_rows: int,
    rows_by_dataset: Sequence[str],
    fixed: Sequence[str],
    own: Collection[str] = (),
    keep: Collection[str] = (),
) -> Design:
    """The columns: the table's hand-made features (``fixed``), and words seen in
    ``min_rows`` rows of 2+ datasets, or of one of the ``own`` datasets (an application's
    own traffic: its vocabulary is what there is to learn), and the ``keep`` words."""
    fixed = list(fixed)
    rows_per_word: Counter[str] = Counter()
    sets_per_word: dict[str, set[str]] = defaultdict(set)
    for f, ds in zip(feats, rows_by_dataset, strict=True):
        # Previous-turn words share the ask words' weights; lead words have their own.
        seen = {
            ("h:" if k[0] == "h" else "w:") + k[2:] for k in f if k.startswith(("w:", "p:", "h:"))
        }
        rows_per_word.update(seen)
        for w in seen:
            sets_per_word[w].add(ds)
    own_rows: Counter[str] = Counter()
    if own:
        for f, ds in zip(feats, rows_by_dataset, strict=True):
            if ds in own:
                own_rows.update({("h:" if k[0] == "h" else "w:") + k[2:]
                                 for k in f if k.startswith(("w:", "p:", "h:"))})  # fmt: skip
    vocab = sorted(
        {w for w, n in rows_per_word.items() if n >= min_rows and len(sets_per_word[w]) >= 2}
        | {w for w, n in own_rows.items() if n >= min_rows}
        | set(keep)
    )
    columns = fixed + vocab
    return Design(columns, {c: i for i, c in enumerate(columns)}, len(fixed))


def _matrix(d: Design, feats: Sequence[dict[str, float]], prev_scale: float) -> Any:
    import numpy as np

    x = np.zeros((len(feats), len(d.columns)))
    for r, f in enumerate(feats):
        for key, value in f.items():
            if key.startswith(("w:", "h:")):
                j = d.index.get(key)
                if j is not None:
                    x[r, j] = max(x[r, j], value)
            elif key.startswith("p:"):
                j = d.index.get("w:" + key[2:])
                if j is not None:
                    x[r, j] = max(x[r, j], prev_scale * value)
            else:
                j = d.index.get(key)  # a counter the table does not use is not fitted
                if j is not None:
                    x[r, j] = value
    return x


def _train(
    x: Any,
    y: Any,
    w: Any,
    l2_fixed: float,
    l2_words: float,
    n_fixed: int,
    iterations: int = 400,
    no_bias: bool = False,
    center: Any = None,
    bias0: float = 0.0,
) -> tuple[float, Any]:
    """Weighted L2 logistic regression by Adam on the full batch (deterministic). With
    ``center`` (and ``bias0``), the fit starts there and the penalty pulls toward it (a
    prior: the table being refitted) instead of toward zero."""
    import numpy as np

    k = x.shape[1]
    center = np.zeros(k) if center is None else center
    coef = center.copy()
    bias = bias0
    l2 = np.full(k, l2_words)
    l2[:n_fixed] = l2_fixed
    m, v = np.zeros(k + 1), np.zeros(k + 1)
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8
    wsum = w.sum()
    for t in range(1, iterations + 1):
        z = x @ coef + bias
        p = 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))
        g = (p - y) * w / wsum
        grad = np.concatenate([x.T @ g + l2 * (coef - center), [g.sum()]])
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        step = lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        coef -= step[:-1]
        if not no_bias:
            bias -= step[-1]
    return float(bias), coef


@dataclass(slots=True)
class FitOptions:
    l2_fixed: float = 1e-3
    l2_words: float = 1e-2
    min_rows: int = 3
    max_words: int = 3000
    target_quality: float = 0.9
    # When set, thresholds come from held-out risk instead: the frontier threshold is the
    # highest whose out-of-fold frontier recall on the judged sets reaches it (see
    # ``risk_and_thresholds``), and the table gets its risk map and presets.
    target_recall: float | None = None
    inner_folds: int = 3
    dataset_effects: bool = True
    dataset_weights: dict[str, float] = field(default_factory=dict)  # default 1 each
    # A refit from an application's own traffic (``learn/refit.py``): the table whose weights
    # the fit starts from and is pulled toward, and the datasets whose words need no second
    # dataset to enter the lexicon.
    prior: Rules | None = None
    own_datasets: frozenset[str] = frozenset()


def sample_weights(
    examples: Sequence[Example], dataset_weights: Mapping[str, float] | None = None
) -> list[float]:
    """Each dataset counts the same in total, whatever its size (times its weight)."""
    sizes = Counter(e.dataset for e in examples)
    extra = dataset_weights or {}
    return [extra.get(e.dataset, 1.0) / sizes[e.dataset] for e in examples]


def fit(
    seed: Rules,
    examples: Sequence[Example],
    options: FitOptions,
    feats: Sequence[dict[str, float]] | None = None,
) -> Rules:
    """Refit ``seed``'s weights (counters, patterns, lexicon) and thresholds on ``examples``.

    ``feats``: the examples' features when the caller already has them (cross-validation).
    """
    import numpy as np

    if feats is None:
        feats = features_of(seed, examples)
    fixed = list(seed.spec.counters) + ["re:" + p.id for p in seed.spec.patterns]
    if seed.spec.semantic:
        fixed.append("semantic")  # the distilled lexicon is kept; only its weight is fitted
    prior = options.prior
    kept_words = _prior_words(prior) if prior is not None else {}
    d = design(
        feats, options.min_rows, [e.dataset for e in examples], fixed,
        own=options.own_datasets, keep=kept_words,
    )  # fmt: skip
    x = _matrix(d, feats, seed.spec.prev_lexicon_scale)
    y = np.array([e.strong for e in examples], dtype=float)
    w = np.array(sample_weights(examples, options.dataset_weights))
    datasets = sorted({e.dataset for e in examples})
    center, bias0 = None, 0.0
    if prior is not None:
        center = np.zeros(len(d.columns))
        for column, weight in {**_prior_fixed(prior), **kept_words}.items():
            j = d.index.get(column)
            if j is not None:
                center[j] = weight
        bias0 = prior.spec.bias
    if options.dataset_effects and len(datasets) > 1:
        # One intercept per dataset while fitting, so the weights learn what separates easy
        # from hard *within* a source rather than which source a prompt came from.
        onehot = np.array([[1.0 if e.dataset == ds else 0.0 for ds in datasets] for e in examples])
        bias, coef_all = _train(
            np.hstack([onehot, x]),
            y,
            w,
            options.l2_fixed,
            options.l2_words,
            d.n_fixed + len(datasets),
            no_bias=True,
            center=None if center is None else np.concatenate([[bias0] * len(datasets), center]),
        )
        effects, coef = coef_all[: len(datasets)], coef_all[len(datasets) :]
        bias = float(np.mean(effects))
    else:
        bias, coef = _train(
            x, y, w, options.l2_fixed, options.l2_words, d.n_fixed, center=center, bias0=bias0
        )
    spec = seed.spec
    counters = {c: round(float(coef[d.index[c]]), 4) for c in spec.counters}
    patterns = [
        replace_weight(p, round(float(coef[d.index["re:" + p.id]]), 4)) for p in spec.patterns
    ]
    words = sorted(
        ((abs(float(coef[j])), d.columns[j]) for j in range(d.n_fixed, len(d.columns))),
        reverse=True,
    )[: options.max_words + len(kept_words)]
    kept = sorted(word for mag, word in words if mag >= 0.01)
    lexicon = {w[2:]: round(float(coef[d.index[w]]), 4) for w in kept if w[0] == "w"}
    lead_lexicon = {w[2:]: round(float(coef[d.index[w]]), 4) for w in kept if w[0] == "h"}
    fitted = Rules(
        RulesFile(
            version=spec.version,
            bias=round(bias, 4),
            thresholds=spec.thresholds,
            window=spec.window,
            counters=counters,
            patterns=patterns,
            lexicon=lexicon,
            lead_lexicon=lead_lexicon,
            semantic=spec.semantic,
            semantic_weight=round(float(coef[d.index["semantic"]]), 4) if spec.semantic else 0.0,
            prev_lexicon_scale=spec.prev_lexicon_scale,
            provenance=spec.provenance,
        ),
        seed.source,
    )
    if options.target_recall is not None:
        return with_risk(fitted, seed, examples, options, feats)
    scores = [score_of(fitted, e) for e in examples]
    t = choose_thresholds(scores, examples, options.target_quality)
    return fitted.with_thresholds(t.standard, t.frontier)


def _prior_fixed(prior: Rules) -> dict[str, float]:
    """The prior table's weights by design column: counters, ``re:`` patterns, semantic."""
    spec = prior.spec
    out = dict(spec.counters)
    out.update({"re:" + p.id: p.weight for p in spec.patterns})
    if spec.semantic:
        out["semantic"] = spec.semantic_weight
    return out


def _prior_words(prior: Rules) -> dict[str, float]:
    """The prior table's word weights by design column (``w:`` lexicon, ``h:`` lead)."""
    out = {"w:" + word: weight for word, weight in prior.spec.lexicon.items()}
    out.update({"h:" + word: weight for word, weight in prior.spec.lead_lexicon.items()})
    return out


# Presets: a frontier recall each, on the judged sets, held out while fitting.
PRESET_RECALLS = {"safe": 0.98, "balanced": 0.95, "thrifty": 0.9}


def with_risk(
    fitted: Rules,
    seed: Rules,
    examples: Sequence[Example],
    options: FitOptions,
    feats: Sequence[dict[str, float]],
) -> Rules:
    """``fitted`` with a risk map and thresholds from out-of-fold scores: ``inner_folds``
    refits on the training rows give every row a score from a table that did not see it.
    On the judged sets (tier labels, the product's own question; each set weighted equally):
    the isotonic regression of those scores against the labels is the risk map; the frontier
    threshold is the highest whose out-of-fold recall of frontier rows reaches
    ``target_recall``; the presets are the risks at the recalls of ``PRESET_RECALLS``;
    standard starts where that recall is halfway to 1 (it catches half of what the frontier
    threshold lets through), kept as a share of the frontier risk (``risk.standard``) for
    ``max_risk`` and the presets."""
    import msgspec

    inner = FitOptions(**{**_options_dict(options), "target_recall": None})
    assignment = folds(examples, options.inner_folds, seed=11)
    oof = [0.0] * len(examples)
    for fold in range(options.inner_folds):
        keep = [i for i, f in enumerate(assignment) if f != fold]
        table = fit(seed, [examples[i] for i in keep], inner, [feats[i] for i in keep])
        for i, f in enumerate(assignment):
            if f == fold:
                oof[i] = score_of(table, examples[i])
    judged = [i for i, e in enumerate(examples) if e.judged] or list(range(len(examples)))
    recall_weights = sample_weights([examples[i] for i in judged])
    xs, ys = isotonic(
        [oof[i] for i in judged], [examples[i].strong for i in judged], recall_weights
    )

    def threshold(recall: float) -> float:
        scores, labels = [oof[i] for i in judged], [examples[i].strong for i in judged]
        cut = recall_threshold(scores, labels, recall_weights, recall)
        # A refit from the store: what the recall misses for free is caught (``widened``).
        return widened(cut, scores, labels) if options.prior is not None else cut

    mapped = Rules(
        msgspec.structs.replace(fitted.spec, risk=RiskMap(scores=xs, risks=ys, presets={})),
        fitted.source,
    )
    target = options.target_recall if options.target_recall is not None else 0.95
    presets = {
        name: round(max(1e-4, mapped.risk(threshold(r))), 4) for name, r in PRESET_RECALLS.items()
    }
    frontier = threshold(target)
    # Standard catches half of what the frontier threshold lets through.
    standard = min(frontier, threshold(1.0 - (1.0 - target) / 2))
    share = mapped.risk(standard) / max(1e-6, mapped.risk(frontier))
    risk = RiskMap(
        scores=xs, risks=ys, presets=presets, standard=round(min(1.0, max(0.05, share)), 4)
    )
    out = Rules(msgspec.structs.replace(fitted.spec, risk=risk), fitted.source)
    return out.with_thresholds(round(standard, 4), round(frontier, 4))


def _options_dict(options: FitOptions) -> dict[str, Any]:
    return {name: getattr(options, name) for name in FitOptions.__dataclass_fields__}


def replace_weight(rule: Any, weight: float) -> Any:
    import msgspec

    return msgspec.structs.replace(rule, weight=weight)


def choose_thresholds(
    scores: Sequence[float], examples: Sequence[Example], target_quality: float
) -> Thresholds:
    """The highest frontier threshold that still recovers ``target_quality`` of the gap
    (per-dataset weighted), and a standard threshold that recovers half of what remains."""
    weights = sample_weights(examples)

    def quality(threshold: float) -> float:
        got = weak = strong = 0.0
        for s, e, w in zip(scores, examples, weights, strict=True):
            weak += w * e.weak_score
            strong += w * e.strong_score
            got += w * (e.strong_score if s >= threshold else e.weak_score)
        return (got - weak) / (strong - weak) if strong != weak else 1.0

    candidates = sorted(set(round(s, 4) for s in scores), reverse=True)

    def highest(target: float) -> float:
        for t in candidates:
            if quality(t) >= target:
                return t
        return 0.0

    frontier = highest(target_quality)
    standard = min(frontier, highest(target_quality + (1.0 - target_quality) / 2.0))
    return Thresholds(standard=round(standard, 4), frontier=round(frontier, 4))


def folds(examples: Sequence[Example], k: int, seed: int = 7) -> list[int]:
    """A fold number per example; rows of one group (an MT-Bench question) share a fold."""
    groups = sorted({(e.dataset, e.group) for e in examples})
    random.Random(seed).shuffle(groups)
    fold_of = {g: i % k for i, g in enumerate(groups)}
    return [fold_of[(e.dataset, e.group)] for e in examples]


def cross_val_scores(
    seed: Rules, examples: Sequence[Example], options: FitOptions, k: int = 5
) -> tuple[list[float], list[bool]]:
    """Out-of-fold scores, and whether each row's own fold-fitted table (weights *and*
    thresholds, so nothing of the row leaks) sends it to the frontier tier."""
    assignment = folds(examples, k)
    scores = [0.0] * len(examples)
    routed = [False] * len(examples)
    feats = features_of(seed, examples)
    for fold in range(k):
        keep = [i for i, f in enumerate(assignment) if f != fold]
        rules = fit(seed, [examples[i] for i in keep], options, [feats[i] for i in keep])
        for i, (e, f) in enumerate(zip(examples, assignment, strict=True)):
            if f == fold:
                scores[i] = rules.score(e.body)[0]
                routed[i] = rules.decide(e.body).tier == "frontier"
    return scores, routed


def leave_one_out_scores(
    seed: Rules,
    examples: Sequence[Example],
    options: FitOptions,
    held_out: str,
    feats: Sequence[dict[str, float]] | None = None,
) -> tuple[Rules, list[Example], list[float]]:
    """Fit without dataset ``held_out``; score that dataset with the result."""
    train = [e for e in examples if e.dataset != held_out]
    rules = fit(
        seed,
        train,
        options,
        feats and [f for f, e in zip(feats, examples, strict=True) if e.dataset != held_out],
    )
    test = [e for e in examples if e.dataset == held_out]
    return rules, test, [rules.score(e.body)[0] for e in test]


def report(
    scores: Sequence[float],
    examples: Sequence[Example],
    thresholds: Thresholds,
    routed: Sequence[bool] | None = None,
) -> dict[str, float]:
    """AUC, APGR and the figures at the frontier threshold (or per-row ``routed``)."""
    out = {
        "n": float(len(examples)),
        "auc": auc(scores, [e.strong for e in examples]),
        "apgr": apgr(scores, examples),
    }
    out.update(threshold_report(scores, examples, thresholds.frontier, routed))
    return out
