"""``gearshift eval`` and ``gearshift calibrate``: read labeled files, report, write tables.

The measures and the fitting live in ``calibrate.py``; this module is their command-line
face (tables on stdout, JSON with ``--json``, an optional PNG curve).
"""

from __future__ import annotations

import datetime
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import orjson

from gearshift.offline import calibrate as cal
from gearshift.routing.classify import Rules, RulesError, load_rules, write_rules


def _by_dataset(examples: Sequence[cal.Example]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        out.setdefault(e.dataset, []).append(i)
    return out


def dataset_report(
    rules: Rules,
    examples: Sequence[cal.Example],
    scores: Sequence[float],
    routed: Sequence[bool] | None = None,
) -> dict[str, dict[str, float]]:
    """Per dataset: AUC, APGR, and at the table's frontier threshold (or per-row ``routed``)
    PGR, strong-call share, accuracy and recall of each class (as ``docs/routing.md``)."""
    out = {}
    for name, idx in _by_dataset(examples).items():
        sub = [examples[i] for i in idx]
        out[name] = cal.report(
            [scores[i] for i in idx],
            sub,
            rules.spec.thresholds,
            None if routed is None else [routed[i] for i in idx],
        )
    return out


def _fmt(v: float) -> str:
    return "   -" if math.isnan(v) else f"{v:.3f}"


def print_table(title: str, report: dict[str, dict[str, float]], out: TextIO) -> None:
    cols = ("n", "auc", "apgr", "pgr", "strong_share", "accuracy", "strong_recall", "weak_recall")
    out.write(f"{title}\n")
    out.write(f"{'dataset':<18}" + "".join(f"{c:>14}" for c in cols) + "\n")
    for name, r in sorted(report.items()):
        cells = [f"{int(r['n']):>14}"] + [f"{_fmt(r[c]):>14}" for c in cols[1:]]
        out.write(f"{name:<18}" + "".join(cells) + "\n")
    out.write("\n")


def _load(files: Sequence[str]) -> list[cal.Example]:
    try:
        examples = cal.load_examples(files)
    except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
        raise SystemExit(f"gearshift: cannot read labeled data: {exc}") from None
    if not examples:
        raise SystemExit("gearshift: no labeled rows in " + ", ".join(files))
    return examples


def evaluate_files(
    files: Sequence[str],
    rules_path: str | None,
    *,
    as_json: bool = False,
    plot: str | None = None,
    out: TextIO | None = None,
) -> int:
    out = out or sys.stdout
    try:
        rules = load_rules(rules_path)
    except RulesError as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return 2
    examples = _load(files)
    scores = [rules.score(e.body)[0] for e in examples]
    report = dataset_report(rules, examples, scores)
    if as_json:
        out.write(
            orjson.dumps(
                {
                    "rules": rules.source,
                    "thresholds": {
                        "standard": rules.spec.thresholds.standard,
                        "frontier": rules.spec.thresholds.frontier,
                    },
                    "datasets": report,
                },
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            ).decode()
            + "\n"
        )
    else:
        t = rules.spec.thresholds
        print_table(
            f"rules {rules.source} (frontier at score >= {t.frontier}, standard at "
            f">= {t.standard})",
            report,
            out,
        )
    if plot:
        write_curve(plot, examples, scores)
    return 0


def write_curve(path: str, examples: Sequence[cal.Example], scores: Sequence[float]) -> None:
    """PGR against strong-call share, one line per dataset (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("gearshift: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    shares = [c / 20 for c in range(21)]
    for name, idx in sorted(_by_dataset(examples).items()):
        sub = [examples[i] for i in idx]
        sc = [scores[i] for i in idx]
        ax.plot(shares, [cal.pgr_at(sc, sub, c) for c in shares], label=name)
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label="random")
    ax.set_xlabel("share of requests sent to the strong model")
    ax.set_ylabel("share of the quality gap recovered (PGR)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def calibrate_files(
    files: Sequence[str],
    *,
    out: str,
    seed: str | None,
    target_quality: float,
    cv: int,
    lodo: bool,
    weights: dict[str, float] | None = None,
    stream: TextIO | None = None,
) -> int:
    """Fit on ``files``, print held-out figures, write the table to ``out`` (TOML) and its
    word maps beside it (``my.toml`` → ``my.lexicons.msgpack``, named in the TOML)."""
    stream = stream or sys.stdout
    try:
        import numpy  # noqa: F401
    except ImportError:
        print("gearshift calibrate needs numpy: pip install 'gearshift[fit]'", file=sys.stderr)
        return 2
    try:
        seed_rules = load_rules(seed)
    except RulesError as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return 2
    if not 0.0 < target_quality <= 1.0:
        print("gearshift calibrate: --target-quality must be in (0, 1]", file=sys.stderr)
        return 2
    examples = _load(files)
    options = cal.FitOptions(target_quality=target_quality, dataset_weights=weights or {})
    # The seed's semantic word scores were fitted on all of their rows, so held-out figures
    # here are optimistic for that feature (bench/semantic.py refits it per fold).
    semantic_note = (
        " [semantic word scores kept from the seed: optimistic]" if seed_rules.spec.semantic else ""
    )
    fitted = cal.fit(seed_rules, examples, options)
    if cv > 1:
        scores, routed = cal.cross_val_scores(seed_rules, examples, options, cv)
        print_table(
            f"{cv}-fold cross-validated (out-of-fold scores; each fold's own thresholds)"
            + semantic_note,
            dataset_report(fitted, examples, scores, routed),
            stream,
        )
    if lodo:
        report = {}
        for name in sorted({e.dataset for e in examples}):
            rules, test, scores = cal.leave_one_out_scores(seed_rules, examples, options, name)
            report.update(dataset_report(rules, test, scores))
        print_table(
            "leave-one-dataset-out (each fitted without it)" + semantic_note, report, stream
        )
    in_sample = [fitted.score(e.body)[0] for e in examples]
    print_table(
        "in-sample (the written table on its own training data)",
        dataset_report(fitted, examples, in_sample),
        stream,
    )
    counts = {name: len(idx) for name, idx in _by_dataset(examples).items()}
    provenance = {
        "fitted": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "data": ", ".join(f"{Path(f).name} ({counts[Path(f).stem]})" for f in files),
        "target_quality": str(target_quality),
        "command": "gearshift calibrate "
        + " ".join(Path(f).name for f in files)
        + (f" --seed {seed}" if seed else "")
        + f" --target-quality {target_quality}"
        + "".join(f" --weight {k}={v}" for k, v in sorted((weights or {}).items())),
    }
    import msgspec

    spec = msgspec.structs.replace(fitted.spec, provenance=provenance)
    header = [
        "gearshift rule table, fitted by `gearshift calibrate` (see docs/routing.md).",
        "Weights are logistic-regression coefficients; score = sigmoid(bias + sum).",
    ]
    lexicons = write_rules(spec, out, header)
    t = spec.thresholds
    stream.write(
        f"wrote {out} and {lexicons}: {len(spec.lexicon)} lexicon words, thresholds standard "
        f"{t.standard} / frontier {t.frontier}\n"
    )
    return 0
