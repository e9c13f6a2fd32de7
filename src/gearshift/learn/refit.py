"""A refit from the outcome store that has to prove itself (``gearshift calibrate
--from-store``, ``gearshift eval --from-store``).

- **Data.** The store's labeled rows (feedback, or the judge agreeing in both orders). A
  redacted row has no text: it is fitted and scored on the features stored with it (the
  table's own counters, patterns and vocabulary; no lean for uncertain requests). A stable share
  (``[learn] hold_back``, by a hash of the request id) is held back; the rest is fitted.
- **The fit** starts from the table in force and is pulled toward it (``FitOptions.prior``):
  the shipped data is not installed with gearshift (its licences keep it out), and the table
  in force is what that data taught. The store's own words may enter the lexicon on the
  store's rows alone. Data files given beside it (the shipped sets, from a checkout, or the
  team's own) are fitted too; ``store_weight`` is the store's weight against them. The
  thresholds and the risk map come from out-of-fold scores at ``target_recall``.
- **What the table in force sends to the frontier** stays there unless a label says
  otherwise: an unlabeled row it sends there counts as needing it (in the fit and the proof),
  and the refit is refused while the store holds fewer than ``MIN_IN_FORCE`` of them.
- **The proof**, on the held-back rows (held back by a hash of what they asked, so that a
  prompt asked twice stays on one side): the candidate must save at least ``min_gain`` more
  (share of the all-frontier bill) at frontier recall ``target_recall`` than the table in
  force; as deployed (its own thresholds) it must save at least what the table in force
  could at the recall it reaches, less ``margin``; and it may be no worse by more than
  ``margin`` anywhere else: its frontier recall as deployed on the held-back rows, on each
  task cluster among them and on each given data file, and its AUC on each data file (where
  one is defined). Otherwise it is refused.
"""

from __future__ import annotations

import datetime
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from gearshift.learn.outcomes import Outcome, routing_row
from gearshift.learn.report import cluster_of
from gearshift.learn.spec import LearnSpec
from gearshift.offline import calibrate as cal
from gearshift.offline import report as rep
from gearshift.routing.classify import Rules

STORE = "store"
MIN_HELD = 20  # held-back rows needed to prove anything
MIN_HELD_POSITIVE = 2  # of which needing the frontier
MIN_CLUSTER = 10  # held-back rows of a cluster for it to be checked on its own
MIN_IN_FORCE = 5  # stored requests the table in force sends to the frontier
MIN_IN_FORCE_HELD = 2  # of them held back


def held_back(key: str, share: float) -> bool:
    """Whether a row is held back, by a hash of ``key`` (what it asked): stable across runs
    (``eval`` and ``calibrate`` agree)."""
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return h / 2**64 < share


def tier(rules: Rules, e: cal.Example) -> str:
    """The tier ``rules`` gives ``e`` as traffic would get it: from its text, or from its
    stored features (no lean for uncertain requests)."""
    if e.features is None:
        return rules.decide(e.body).tier
    return rules.tier_for(cal.score_features(rules, e.features))


@dataclass(slots=True)
class StoreData:
    train: list[cal.Example]
    held: list[cal.Example]
    redacted: int = 0  # rows without text: fitted and measured on their features
    kept: int = 0  # unlabeled rows the table in force sends to the frontier (kept there)
    labeled: int = 0
    in_force_frontier: int = 0  # rows the table in force sends to the frontier


def store_data(outcomes: Sequence[Outcome], spec: LearnSpec, rules: Rules) -> StoreData:
    """The store's rows as examples (``category``: their task cluster), split: the labeled
    ones, and the unlabeled ones that ``rules`` (the table in force) sends to the frontier,
    as needing it: without a label to say otherwise, a refit keeps them there."""
    data = StoreData([], [])
    for i, o in enumerate(outcomes):
        example = cal.example_from_row(routing_row(o), STORE, i)
        if o.redact != "none":  # no text: the features stored with it (the table's own)
            example.features = o.features
        up = tier(rules, example) == "frontier"
        data.in_force_frontier += up
        if o.weak_suffices is None:
            if not up:
                continue
            data.kept += 1  # (routing_row labels an unlabeled row as needing the frontier)
        else:
            data.labeled += 1
        data.redacted += example.features is not None
        example.category = o.cluster or cluster_of(o.request, o.features, rules)
        # Held back by what was asked: the same prompt asked twice stays on one side (with
        # the text dropped, every prompt looks alike: by the request id then).
        asked = orjson.dumps(o.request.get("messages") if isinstance(o.request, dict) else None)
        key = o.request_id if o.redact == "drop" else asked.decode()
        (data.held if held_back(key, spec.hold_back) else data.train).append(example)
    return data


def refit(
    current: Rules, train: Sequence[cal.Example], others: Sequence[cal.Example], spec: LearnSpec
) -> Rules:
    """The candidate: ``current`` refitted on the store's training rows and ``others``."""
    options = cal.FitOptions(
        target_recall=spec.target_recall,
        prior=current,
        own_datasets=frozenset({STORE}),
        dataset_weights={STORE: spec.store_weight},
    )
    fitted = cal.fit(current, [*train, *others], options)
    import msgspec

    provenance = {
        "fitted": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "data": f"outcome store ({len(train)} labeled rows"
        + (f", {len(others)} rows of data files" if others else "")
        + f"), refitted from {current.source}",
        "target_recall": str(spec.target_recall),
        "command": "gearshift calibrate --from-store",
    }
    return Rules(msgspec.structs.replace(fitted.spec, provenance=provenance), "candidate")


@dataclass(slots=True)
class Figures:
    """One table on one set of rows."""

    n: int
    positives: int  # rows needing the frontier
    auc: float
    saving: float  # at frontier recall target_recall, the threshold chosen on these rows
    recall: float  # frontier recall as deployed (the table's own thresholds)
    deployed_saving: float  # the saving as deployed

    def doc(self) -> dict[str, float]:
        return {
            "n": self.n, "positives": self.positives, "auc": self.auc, "saving": self.saving,
            "recall": self.recall, "deployed_saving": self.deployed_saving,
        }  # fmt: skip


def figures(
    rules: Rules, examples: Sequence[cal.Example], recall: float, costs: rep.Costs
) -> Figures:
    scores = [cal.score_of(rules, e) for e in examples]
    labels = [e.strong for e in examples]
    at = rep.savings_at_recall(scores, examples, recall, costs, rules)
    routed = [tier(rules, e) == "frontier" for e in examples]
    pos = sum(labels)
    hit = sum(1 for r, y in zip(routed, labels, strict=True) if r and y)
    frontier = [costs.cost(e.body, costs.frontier) for e in examples]
    light = [costs.cost(e.body, costs.light) for e in examples]
    bill = sum(f if r else lc for r, f, lc in zip(routed, frontier, light, strict=True))
    return Figures(
        n=len(examples),
        positives=pos,
        auc=cal.auc(scores, labels) if examples else math.nan,
        saving=at["saving"],
        recall=hit / pos if pos else math.nan,
        deployed_saving=1 - bill / sum(frontier) if sum(frontier) else math.nan,
    )


@dataclass(slots=True)
class Comparison:
    """The table in force and the candidate, side by side, and the verdict."""

    sets: dict[str, tuple[Figures, Figures]] = field(default_factory=dict)
    accepted: bool = False
    reasons: list[str] = field(default_factory=list)
    train_rows: int = 0
    redacted: int = 0
    kept: int = 0

    def doc(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "reasons": self.reasons,
            "train_rows": self.train_rows,
            "redacted_rows": self.redacted,
            "kept_at_the_frontier": self.kept,
            "sets": {
                name: {"current": cur.doc(), "candidate": cand.doc()}
                for name, (cur, cand) in self.sets.items()
            },
        }


HELD = "held-back"
IN_FORCE = "held-back, frontier in force"  # those the table in force sends to the frontier


def compare(
    current: Rules,
    candidate: Rules,
    held: Sequence[cal.Example],
    files: dict[str, list[cal.Example]],
    spec: LearnSpec,
    costs: rep.Costs,
    in_force_frontier: int | None = None,
) -> Comparison:
    """Both tables on the held-back rows, on each of their task clusters with enough rows,
    and on each data file; accepted only as the module's docstring says."""
    out = Comparison()
    recall = spec.target_recall
    clusters: dict[str, list[cal.Example]] = {}
    for e in held:
        clusters.setdefault(e.category, []).append(e)
    sets = {HELD: held}
    up = [e for e in held if tier(current, e) == "frontier"]
    if up:
        sets[IN_FORCE] = up
    sets |= {name: rows for name, rows in sorted(clusters.items()) if len(rows) >= MIN_CLUSTER}
    sets |= {"file:" + name: rows for name, rows in sorted(files.items())}
    for name, rows in sets.items():
        out.sets[name] = (
            figures(current, rows, recall, costs),
            figures(candidate, rows, recall, costs),
        )
    cur, cand = out.sets[HELD]
    held_up = len(sets.get(IN_FORCE, []))
    if in_force_frontier is not None and (
        in_force_frontier < MIN_IN_FORCE or held_up < MIN_IN_FORCE_HELD
    ):
        out.reasons.append(
            f"the store holds {in_force_frontier} requests the table in force sends to the "
            f"frontier, {held_up} of them held back (at least {MIN_IN_FORCE} and "
            f"{MIN_IN_FORCE_HELD}): the candidate cannot be checked on them; set [learn] "
            "frontier_share (or record_share) and record more traffic"
        )
    if cur.n < MIN_HELD or cur.positives < MIN_HELD_POSITIVE:
        out.reasons.append(
            f"too few held-back rows to prove anything: {cur.n} rows, {cur.positives} needing "
            f"the frontier (at least {MIN_HELD} and {MIN_HELD_POSITIVE}); label more traffic"
        )
        return out
    gain = cand.saving - cur.saving
    if not gain >= spec.min_gain:
        out.reasons.append(
            f"held-back rows: saving at frontier recall {recall:g} is {_p(cand.saving)} for "
            f"the candidate against {_p(cur.saving)} for the table in force; it must gain "
            f"{_p(spec.min_gain)}"
        )
    # As deployed (its own thresholds), the candidate must save at least what the table in
    # force could at the same recall, less the margin: a good ranking with bad thresholds
    # does not pass.
    scores = [cal.score_of(current, e) for e in held]
    if not math.isnan(cand.recall) and cand.recall > 0:
        could = rep.savings_at_recall(scores, held, cand.recall, costs)["saving"]
        if not cand.deployed_saving >= could - spec.margin:
            out.reasons.append(
                f"held-back rows: as deployed the candidate saves {_p(cand.deployed_saving)} "
                f"at frontier recall {_p(cand.recall)}; the table in force can save "
                f"{_p(could)} there"
            )
    for name, (c0, c1) in out.sets.items():
        # What the table in force sends up stays up (less the margin); elsewhere the recall
        # may come down to the target.
        floor = c0.recall if name == IN_FORCE else min(c0.recall, recall)
        if c0.positives and not c1.recall >= floor - spec.margin:
            out.reasons.append(
                f"{name}: frontier recall as deployed {_p(c1.recall)} against {_p(c0.recall)} "
                f"for the table in force, worse by more than {_p(spec.margin)}"
            )
        if (
            name.startswith("file:")
            and not math.isnan(c0.auc)
            and not c1.auc >= c0.auc - spec.margin
        ):
            out.reasons.append(
                f"{name}: AUC {c1.auc:.3f} against {c0.auc:.3f}, worse by more than {spec.margin:g}"
            )
    out.accepted = not out.reasons
    if out.accepted:
        out.reasons.append(
            f"held-back rows: saving at frontier recall {recall:g} {_p(cur.saving)} -> "
            f"{_p(cand.saving)}; no set worse by more than {spec.margin:g}"
        )
    return out


def _p(v: float) -> str:
    return "-" if math.isnan(v) else f"{100 * v:.1f}%"


def write_text(comparison: Comparison, out: Any) -> None:
    out.write(
        f"refit on {comparison.train_rows} labeled store rows"
        + (f" ({comparison.redacted} redacted: on their features)" if comparison.redacted else "")
        + (
            f"; {comparison.kept} unlabeled rows the table in force sends to the frontier "
            "count as needing it"
            if comparison.kept
            else ""
        )
        + "; measured on the held-back rows\n"
        "saving: share of the all-frontier bill saved at the target frontier recall (the "
        "threshold set on these rows); as deployed: at each table's own thresholds\n\n"
    )
    titles = ("AUC", "saving", "recall deployed", "saving deployed")
    out.write(f"{'':<38}" + "".join(f"{t:^20}" for t in titles) + "\n")
    out.write(f"{'set':<26}{'n':>6}{'need':>6}" + f"{'current / candidate':^20}" * 4 + "\n")
    for name, (c0, c1) in comparison.sets.items():
        cells = [
            (_f(c0.auc), _f(c1.auc)),
            (_p(c0.saving), _p(c1.saving)),
            (_p(c0.recall), _p(c1.recall)),
            (_p(c0.deployed_saving), _p(c1.deployed_saving)),
        ]
        out.write(
            f"{name[:25]:<26}{c0.n:>6}{c0.positives:>6}"
            + "".join(f"{a:>9} / {b:<8}" for a, b in cells)
            + "\n"
        )
    verdict = "ACCEPTED" if comparison.accepted else "REFUSED"
    out.write(f"\n{verdict}: " + "; ".join(comparison.reasons) + "\n")


def _f(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.3f}"


__all__ = ["Comparison", "StoreData", "compare", "held_back", "refit", "store_data", "write_text"]
