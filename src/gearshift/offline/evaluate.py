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
from gearshift.offline import report as rep
from gearshift.routing.classify import Rules, RulesError, load_rules
from gearshift.routing.tablefile import write_rules


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


def _costs(config_path: str | None, err: TextIO) -> rep.Costs | None:
    """The light and frontier prices of ``config_path`` (default: the built-in catalog), or
    None, said on ``err``, when no configuration loads."""
    from gearshift.config import ConfigError, load
    from gearshift.providers import REGISTRY

    try:
        return rep.tier_costs(load(config_path, kinds=REGISTRY.keys()))
    except (ConfigError, ValueError) as exc:
        err.write(f"gearshift eval: no configuration, savings skipped: {exc}\n")
        return None


def print_reliability(title: str, rel: rep.Reliability, out: TextIO) -> None:
    out.write(f"{title} ({rel['strategy']} bins)\n")
    out.write(f"{'risk':>16}{'n':>8}{'mean risk':>12}{'observed':>12}\n")
    for b in rel["bins"]:
        out.write(
            f"{b['lo']:>7.3f} - {b['hi']:<6.3f}{b['n']:>8}{b['mean_risk']:>12.3f}"
            f"{b['observed']:>12.3f}\n"
        )
    out.write(f"ECE {_fmt(rel['ece'])}   Brier {_fmt(rel['brier'])}   n {rel['n']}\n\n")


def print_curve(name: str, rows: Sequence[dict[str, float]], out: TextIO) -> None:
    cols = ("strong_share", "threshold", "risk", "pgr", "frontier_recall", "light_recall", "bill")
    out.write(f"cost/quality curve: {name} (bill: share of the all-frontier bill)\n")
    out.write("".join(f"{c:>16}" for c in cols) + "\n")
    for r in rows:
        out.write("".join(f"{_fmt(r[c]):>16}" for c in cols) + "\n")
    out.write("\n")


def print_savings(recall: float, rows: dict[str, dict[str, float]], out: TextIO) -> None:
    cols = ("threshold", "risk", "strong_share", "frontier_recall", "light_recall", "accuracy",
            "pgr", "saving")  # fmt: skip
    out.write(
        f"savings at frontier recall >= {recall:g} (saving: share of the all-frontier bill)\n"
    )
    out.write(f"{'dataset':<18}" + "".join(f"{c:>16}" for c in cols) + "\n")
    for name, r in sorted(rows.items()):
        out.write(f"{name:<18}" + "".join(f"{_fmt(r[c]):>16}" for c in cols) + "\n")
    out.write("\n")


def evaluate_files(
    files: Sequence[str],
    rules_path: str | None,
    *,
    as_json: bool = False,
    plot: str | None = None,
    out: TextIO | None = None,
    curve: bool = False,
    recall: float | None = None,
    config_path: str | None = None,
    bins: int = 10,
    by_language: bool = False,
) -> int:
    """Per file: AUC, APGR and the figures at the frontier threshold; over all rows (and per
    file with ``as_json``) the reliability of the table's risk; with ``curve`` the cost/quality
    curve per file, with ``recall`` the savings per file at that frontier recall (costs from
    ``config_path``, default the built-in catalog)."""
    out = out or sys.stdout
    if recall is not None and not 0.0 < recall <= 1.0:
        print("gearshift eval: --recall must be within (0, 1]", file=sys.stderr)
        return 2
    try:
        rules = load_rules(rules_path)
    except RulesError as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return 2
    examples = _load(files)
    scores = [rules.score(e.body)[0] for e in examples]
    routed = frontier_routed(rules, examples)
    dsreport = dataset_report(rules, examples, scores, routed)
    risks = [rules.risk(s) for s in scores]
    labels = [e.strong for e in examples]
    by_dataset = _by_dataset(examples)
    calibrated = bool(rules.spec.risk.scores)
    rel_all = rep.reliability(risks, labels, bins)
    costs = _costs(config_path, sys.stderr) if curve or recall is not None else None
    curves: dict[str, list[dict[str, float]]] = {}
    savings: dict[str, dict[str, float]] = {}
    for name, idx in sorted(by_dataset.items()):
        sub = [examples[i] for i in idx]
        sc = [scores[i] for i in idx]
        if curve:
            curves[name] = rep.curve(sc, sub, rules, costs)
        if recall is not None:
            savings[name] = rep.savings_at_recall(sc, sub, recall, costs, rules)
    if as_json:
        doc: dict[str, object] = {
            "rules": rules.source,
            "thresholds": {
                "standard": rules.spec.thresholds.standard,
                "frontier": rules.spec.thresholds.frontier,
            },
            "datasets": dsreport,
            "reliability": {
                "calibrated": calibrated,
                "all": rel_all,
                "datasets": {
                    name: rep.reliability([risks[i] for i in idx], [labels[i] for i in idx], bins)
                    for name, idx in sorted(by_dataset.items())
                },
            },
        }
        if curve or recall is not None:
            doc["costs"] = costs.as_dict() if costs is not None else None
        if curve:
            doc["curve"] = curves
        if recall is not None:
            doc["savings"] = {"recall": recall, "datasets": savings}
        if by_language:
            doc["languages"] = language_report(examples, routed)
        out.write(
            orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode() + "\n"
        )
    else:
        t = rules.spec.thresholds
        print_table(
            f"rules {rules.source} (frontier at score >= {t.frontier}, standard at "
            f">= {t.standard})",
            dsreport,
            out,
        )
        print_reliability(
            "calibration over all rows: predicted risk against the share needing the strong "
            "model" + ("" if calibrated else " [no risk map in this table: risk = score]"),
            rel_all,
            out,
        )
        if costs is not None:
            out.write(costs.describe() + "\n\n")
        for name, rows in curves.items():
            print_curve(name, rows, out)
        if recall is not None:
            print_savings(recall, savings, out)
        if by_language:
            print_languages(language_report(examples, routed), out)
    if plot:
        write_curve(plot, examples, scores)
    return 0


def frontier_routed(rules: Rules, examples: Sequence[cal.Example]) -> list[bool]:
    """Whether the table sends each row to the frontier tier, as it would in traffic: at its
    frontier threshold, or below it when an uncertain request leans there."""
    return [rules.decide(e.body).tier == "frontier" for e in examples]


def language_report(
    examples: Sequence[cal.Example], routed: Sequence[bool]
) -> dict[str, dict[str, dict[str, float]]]:
    """Per file and language: rows, frontier rows, and the recall of each class."""
    cells: dict[tuple[str, str], list[int]] = {}
    for i, e in enumerate(examples):
        cells.setdefault((e.dataset, e.language), []).append(i)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (name, lang), idx in sorted(cells.items()):
        pos = [i for i in idx if examples[i].strong]
        neg = [i for i in idx if not examples[i].strong]
        out.setdefault(name, {})[lang] = {
            "n": float(len(idx)),
            "frontier_rows": float(len(pos)),
            "strong_recall": sum(routed[i] for i in pos) / len(pos) if pos else math.nan,
            "weak_recall": sum(not routed[i] for i in neg) / len(neg) if neg else math.nan,
        }
    return out


def print_languages(report: dict[str, dict[str, dict[str, float]]], out: TextIO) -> None:
    out.write("by language (at the table's tiers; uncertain requests leaned as in traffic)\n")
    cols = ("n", "frontier_rows", "strong_recall", "weak_recall")
    out.write(f"{'dataset':<18}{'language':>10}" + "".join(f"{c:>15}" for c in cols) + "\n")
    for name, langs in report.items():
        for lang, r in langs.items():
            cells = [f"{int(r['n']):>15}", f"{int(r['frontier_rows']):>15}"]
            cells += [f"{_fmt(r[c]):>15}" for c in cols[2:]]
            out.write(f"{name:<18}{lang:>10}" + "".join(cells) + "\n")
    out.write("\n")


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
    target_quality: float | None,
    cv: int,
    lodo: bool,
    weights: dict[str, float] | None = None,
    stream: TextIO | None = None,
    target_recall: float | None = None,
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
    if target_quality is not None and target_recall is not None:
        print("gearshift calibrate: give --target-recall or --target-quality", file=sys.stderr)
        return 2
    if target_quality is None:
        target_recall = 0.95 if target_recall is None else target_recall
    for flag, value in (("recall", target_recall), ("quality", target_quality)):
        if value is not None and not 0.0 < value <= 1.0:
            print(f"gearshift calibrate: --target-{flag} must be in (0, 1]", file=sys.stderr)
            return 2
    examples = _load(files)
    options = cal.FitOptions(
        target_quality=target_quality or 0.9,
        target_recall=target_recall,
        dataset_weights=weights or {},
    )
    rule = (
        f" --target-recall {target_recall}"
        if target_recall is not None
        else f" --target-quality {target_quality}"
    )
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
            report.update(dataset_report(rules, test, scores, frontier_routed(rules, test)))
        print_table(
            "leave-one-dataset-out (each fitted without it)" + semantic_note, report, stream
        )
    in_sample = [fitted.score(e.body)[0] for e in examples]
    print_table(
        "in-sample (the written table on its own training data)",
        dataset_report(fitted, examples, in_sample, frontier_routed(fitted, examples)),
        stream,
    )
    counts = {name: len(idx) for name, idx in _by_dataset(examples).items()}
    provenance = {
        "fitted": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "data": ", ".join(f"{Path(f).name} ({counts[Path(f).stem]})" for f in files),
        **(
            {"target_recall": str(target_recall)}
            if target_recall is not None
            else {"target_quality": str(target_quality)}
        ),
        "command": "gearshift calibrate "
        + " ".join(Path(f).name for f in files)
        + (f" --seed {seed}" if seed else "")
        + rule
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
