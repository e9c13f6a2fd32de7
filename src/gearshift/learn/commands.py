"""The learning loop's commands: ``outcomes`` (export), ``judge``, ``report``, and the
``--from-store`` faces of ``calibrate`` and ``eval`` (``docs/learning.md``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import orjson

from gearshift.config import Config, ConfigError
from gearshift.learn import judge as judging
from gearshift.learn import refit as refitting
from gearshift.learn import report as reporting
from gearshift.learn.outcomes import Outcome, OutcomeStore, SqliteOutcomes, routing_row
from gearshift.routing.classify import Rules, RulesError, load_rules


def open_store(config: Config) -> SqliteOutcomes | None:
    try:
        return SqliteOutcomes.open(config.learn)
    except ConfigError as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return None


def read_rows(config: Config, labeled: bool | None = None) -> list[Outcome] | None:
    store = open_store(config)
    if store is None:
        return None
    try:
        return store.call(lambda: list(store.outcomes(labeled=labeled)))
    finally:
        store.close_now()


def current_rules(config: Config) -> Rules | None:
    try:
        return load_rules(config.routing.rules)
    except RulesError as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        return None


# ---------------------------------------------------------------- outcomes


def outcomes(config: Config, every: bool, out: str | None) -> int:
    rows = read_rows(config, labeled=None if every else True)
    if rows is None:
        return 2
    lines = b"".join(
        orjson.dumps(routing_row(o) if o.weak_suffices is not None else asdict(o)) + b"\n"
        for o in rows
    )
    if out:
        Path(out).write_bytes(lines)
    else:
        sys.stdout.buffer.write(lines)
    print(f"{len(rows)} rows", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- judge


LEASE = "judge"  # one judge at a time per store: the command, or one server process
LEASE_SECONDS = 600.0


class Busy(Exception):
    """Another process is judging this store."""


async def judge_store(
    config: Config,
    store: OutcomeStore,
    *,
    again: bool = False,
    limit: int | None = None,
    concurrency: int = 4,
    transport: Any = None,
) -> judging.Tally:
    """Judge the store's unjudged pairs with ``[learn] judge`` (default: the strongest
    offered model), through a router of its own, under the judge's daily budget, holding
    the store's judge lease (``Busy`` when another process holds it)."""
    import os

    from gearshift.routing.policy import Policy
    from gearshift.serve.router import Router
    from gearshift.serve.transport import HTTPTransport

    rows = await store.run(lambda: store.to_judge(again=again, limit=limit)) or []
    if not rows:
        return judging.Tally()
    rules = load_rules(config.routing.rules)
    routing = Policy.build(config, rules)
    model = config.learn.judge or (routing.baseline.name if routing.baseline else None)
    if model is None:
        raise ConfigError("no judge model: set [learn] judge, or configure a provider")
    holder = f"command:{os.getpid()}"

    async def keep() -> bool:  # the lease, renewed before each pair
        return bool(await store.run(store.lease, LEASE, holder, LEASE_SECONDS))

    if not await keep():
        raise Busy("another process is judging this store (its lease); try again later")
    transport = transport or HTTPTransport(config.providers, config.server.max_response_bytes)
    await transport.start()
    try:
        judge = judging.Judge(
            store, Router(transport, config.reliability).run, routing, model,
            config.learn.judge_budget_daily_usd, max_tokens=config.learn.judge_max_tokens,
        )  # fmt: skip
        return await judge.run_all(rows, concurrency, keep)
    finally:
        await transport.close()
        await store.run(store.release, LEASE, holder)


def judge(config: Config, again: bool, limit: int | None, concurrency: int, as_json: bool) -> int:
    store = open_store(config)
    if store is None:
        return 2

    async def go() -> judging.Tally:
        try:
            return await judge_store(
                config, store, again=again, limit=limit, concurrency=concurrency
            )
        finally:
            await store.close()

    try:
        tally = asyncio.run(go())
    except (ConfigError, RulesError) as exc:
        print(f"gearshift judge: {exc}", file=sys.stderr)
        return 2
    except Busy as exc:
        print(f"gearshift judge: {exc}", file=sys.stderr)
        return 1
    doc = tally.doc()
    if as_json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        print(
            f"judged {doc['judged']} pairs: the cheaper answer sufficed in {doc['suffices']}, "
            f"lost in {doc['lost']}; {doc['split']} split verdicts and {doc['invalid']} "
            f"unparsed replies left unlabeled; {doc['failed']} failed; cost "
            f"${doc['cost_usd']:.6f}"
            + (f"; stopped ({doc['stopped']}) with {doc['left']} left" if doc["stopped"] else "")
        )
    for error in tally.errors[:10]:
        print(f"  {error}", file=sys.stderr)
    return 0 if not tally.failed and tally.stopped is None else 1


# ---------------------------------------------------------------- report


def report(config: Config, as_json: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rules = current_rules(config)
    store = open_store(config)
    if rules is None or store is None:
        return 2
    try:
        doc = store.call(lambda: report_doc(store, rules))
    finally:
        store.close_now()
    if as_json:
        out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        reporting.write_text(doc, out)
    return 0


def report_doc(store: OutcomeStore, rules: Rules, newest: int | None = None) -> dict[str, Any]:
    """(On the store's thread.) The report over the store's rows (``newest``: the most
    recent so many), with what judging cost by the store's ledger: every call, labeled row
    or not, in the last 40 days."""
    doc = reporting.build(store.outcomes(newest=newest), rules).doc()
    doc["judge_cost_usd"] = round(store.judge_spent_since(0.0), 8)
    return doc


# ---------------------------------------------------------------- refit


def _files(paths: Sequence[str]) -> dict[str, list[Any]] | None:
    from gearshift.offline import calibrate as cal

    try:
        examples = cal.load_examples(paths)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        print(f"gearshift: cannot read labeled data: {exc}", file=sys.stderr)
        return None
    out: dict[str, list[Any]] = {}
    for e in examples:
        if e.dataset == refitting.STORE or e.id.startswith("store/"):
            print(
                f"gearshift: {e.dataset}.jsonl holds the outcome store's own rows (or is named "
                "like them): the store is read directly, and its held-back rows must stay "
                "out of the fit; leave the file out (or rename it)",
                file=sys.stderr,
            )
            return None
        out.setdefault(e.dataset, []).append(e)
    return out


def from_store(
    config: Config,
    files: Sequence[str],
    *,
    out: str | None,
    candidate_path: str | None = None,
    as_json: bool = False,
    stream: TextIO | None = None,
) -> int:
    """``calibrate --from-store`` (``out``: write the candidate there if it is accepted;
    exit 1 when refused) and ``eval --from-store`` (no ``out``: print only; the candidate
    is ``candidate_path``, else fitted here)."""
    from gearshift.offline import report as rep
    from gearshift.routing.policy import tuned
    from gearshift.routing.tablefile import write_rules

    stream = stream or sys.stdout
    raw = current_rules(config)
    rows = read_rows(config)
    by_file = _files(files)
    if raw is None or rows is None or by_file is None:
        return 2
    # Both tables are measured as the server runs them: with the config's lean and its
    # thresholds, max_risk or preset (``tuned``); the refit starts from the table's file.
    current = tuned(raw, config)
    spec = config.learn
    data = refitting.store_data(rows, spec, current)
    if candidate_path is not None:
        try:
            candidate = load_rules(candidate_path)
        except RulesError as exc:
            print(f"gearshift: {exc}", file=sys.stderr)
            return 2
    else:
        if not data.labeled or not data.train:
            print(
                f"gearshift: the outcome store has no labeled rows to fit ({data.labeled} "
                f"labeled, {len(data.held)} rows held back): switch [learn] on, run "
                "`gearshift judge`, or send feedback",
                file=sys.stderr,
            )
            return 1
        if not any(e.strong for e in data.train):
            print(
                f"gearshift: none of the store's {len(data.train)} training rows needed the "
                "frontier: there is nothing to learn yet",
                file=sys.stderr,
            )
            return 1
        try:
            import numpy  # noqa: F401
        except ImportError:
            print("gearshift: a refit needs numpy: pip install 'gearshift[fit]'", file=sys.stderr)
            return 2
        others = [e for rows_ in by_file.values() for e in rows_]
        candidate = refitting.refit(raw, data.train, others, spec)
    comparison = refitting.compare(
        current, tuned(candidate, config), data.held, by_file, spec, rep.tier_costs(config),
        in_force_frontier=data.in_force_frontier,
    )  # fmt: skip
    comparison.train_rows, comparison.redacted = len(data.train), data.redacted
    comparison.kept = data.kept
    if as_json:
        stream.write(orjson.dumps(comparison.doc()).decode() + "\n")
    else:
        refitting.write_text(comparison, stream)
    if out is None:
        return 0
    if not comparison.accepted:
        print(f"gearshift calibrate: nothing written to {out}", file=sys.stderr)
        return 1
    header = [
        "gearshift rule table, refitted from the outcome store by "
        "`gearshift calibrate --from-store` (docs/learning.md).",
        "Weights are logistic-regression coefficients; score = sigmoid(bias + sum).",
    ]
    lexicons = write_rules(candidate.spec, out, header)
    if not as_json:
        stream.write(
            f"wrote {out} and {lexicons}. Point [routing] rules at it (if it is not already) "
            "and reload: kill -HUP <gearshift pid>, or POST /gearshift/reload\n"
        )
    return 0


# ---------------------------------------------------------------- the command line


def cmd_outcomes(args: argparse.Namespace) -> int:
    return outcomes(args.load(args.config), args.all, args.out)


def cmd_judge(args: argparse.Namespace) -> int:
    if (args.limit is not None and args.limit < 1) or args.concurrency < 1:
        print("gearshift judge: --limit and --concurrency must be at least 1", file=sys.stderr)
        return 2
    return judge(args.load(args.config), args.again, args.limit, args.concurrency, args.json)


def cmd_report(args: argparse.Namespace) -> int:
    return report(args.load(args.config), args.json)


def add_parsers(sub: Any, load: Callable[[str | None], Config]) -> None:
    """The commands' parsers (``load``: how they read ``--config``, exiting on errors)."""
    out = sub.add_parser(
        "outcomes",
        help="the outcome store's labeled rows as JSONL, in the routing-dev schema "
        "(what calibrate reads)",
    )
    out.add_argument("--config", help="the config whose [learn] store to read")
    out.add_argument("--all", action="store_true", help="every row, labeled or not")
    out.add_argument("--out", help="write here (default: standard output)")
    out.set_defaults(func=cmd_outcomes, load=load)

    jd = sub.add_parser(
        "judge",
        help="ask the judge model whether the cheaper answer of each stored shadow pair was "
        "acceptable (both orders); writes the labels",
    )
    jd.add_argument("--config", help="the config: its [learn] store, judge and budget")
    jd.add_argument("--again", action="store_true", help="judge pairs judged before too")
    jd.add_argument("--limit", type=int, help="at most this many pairs")
    jd.add_argument("--concurrency", type=int, default=4, help="pairs judged at once")
    jd.add_argument("--json", action="store_true", help="the tally as JSON")
    jd.set_defaults(func=cmd_judge, load=load)

    rp = sub.add_parser(
        "report",
        help="per task cluster: share of traffic, savings, judged quality gap (95%% CI); "
        "the requests where the cheaper answer lost",
    )
    rp.add_argument("--config", help="the config whose [learn] store to read")
    rp.add_argument("--json", action="store_true", help="machine-readable output")
    rp.set_defaults(func=cmd_report, load=load)


__all__ = ["add_parsers", "from_store", "judge", "judge_store", "outcomes", "report"]
