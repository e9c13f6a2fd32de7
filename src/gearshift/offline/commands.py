"""The offline routing tools' commands: ``route`` (one decision and its plan), ``classify``
(replay a log of requests), ``eval`` (quality figures on labeled data; ``--from-store``: the
table in force and a candidate side by side) and ``calibrate`` (refit the rule table;
``--from-store``: from the outcome store, written only if it proves better)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from gearshift.config import Config, ConfigError, load
from gearshift.providers import REGISTRY

Load = Callable[[str | None], Config]


def _policy(args: argparse.Namespace) -> Any:
    from gearshift.routing.classify import RulesError, load_rules
    from gearshift.routing.policy import Policy

    try:
        config = load(args.config, kinds=REGISTRY.keys(), assume_keys=True)
        rules = load_rules(args.rules or config.routing.rules)
    except (ConfigError, RulesError) as exc:
        print(f"gearshift: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    return Policy.build(config, rules)


def cmd_route(args: argparse.Namespace) -> int:
    from gearshift.errors import GearshiftError
    from gearshift.offline.replay import decide_one

    if args.request:
        try:
            raw = (
                sys.stdin.buffer.read() if args.request == "-" else Path(args.request).read_bytes()
            )
        except OSError as exc:
            print(f"gearshift route: cannot read {args.request}: {exc.strerror}", file=sys.stderr)
            return 2
    elif args.prompt:
        raw = orjson.dumps(
            {"model": args.model, "messages": [{"role": "user", "content": args.prompt}]}
        )
    else:
        print("gearshift route: give a prompt or --request FILE", file=sys.stderr)
        return 2
    try:
        result = decide_one(raw, _policy(args))
    except GearshiftError as exc:
        print(f"gearshift route: {exc.message}", file=sys.stderr)
        return 1
    sys.stdout.write(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    from gearshift.offline.replay import classify_lines, dumps, summarize

    try:
        stream = sys.stdin.buffer if args.file == "-" else Path(args.file).open("rb")  # noqa: SIM115
    except OSError as exc:
        print(f"gearshift classify: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    with stream:
        results = classify_lines((line.rstrip(b"\r\n") for line in stream), _policy(args))
        if args.summary:
            sys.stdout.write(
                orjson.dumps(summarize(results), option=orjson.OPT_INDENT_2).decode() + "\n"
            )
        else:
            for result in results:
                sys.stdout.write(dumps(result) + "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gearshift.offline.evaluate import evaluate_files

    if args.from_store:
        from gearshift.learn import commands

        return commands.from_store(
            args.load(args.config), args.files, out=None, candidate_path=args.rules,
            as_json=args.json,
        )  # fmt: skip
    if not args.files:
        print("gearshift eval: give labeled files, or --from-store", file=sys.stderr)
        return 2

    return evaluate_files(
        args.files,
        args.rules,
        as_json=args.json,
        plot=args.plot,
        curve=args.curve,
        recall=args.recall,
        config_path=args.config,
        by_language=args.by_language,
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from gearshift.offline.evaluate import calibrate_files

    if args.from_store:
        from gearshift.learn import commands

        return commands.from_store(args.load(args.config), args.files, out=args.out)
    if not args.files:
        print("gearshift calibrate: give labeled files, or --from-store", file=sys.stderr)
        return 2

    weights = {}
    for item in args.weight:
        name, _, value = item.partition("=")
        try:
            weights[name] = float(value)
            if not math.isfinite(weights[name]) or weights[name] < 0:
                raise ValueError(value)
        except ValueError:
            print(f"gearshift calibrate: --weight wants NAME=NUMBER, not {item!r}", file=sys.stderr)
            return 2
    return calibrate_files(
        args.files,
        out=args.out,
        seed=args.seed,
        target_quality=args.target_quality,
        target_recall=args.target_recall,
        cv=args.cv,
        lodo=args.lodo,
        weights=weights,
    )


def add_parsers(sub: Any, load: Load) -> None:
    """The commands' parsers (``load``: how they read ``--config``, exiting on errors)."""
    route = sub.add_parser("route", help="show the routing decision for one request")
    route.add_argument("prompt", nargs="?", help="a user prompt")
    route.add_argument("--request", help="a whole request body (JSON file, or - for stdin)")
    route.add_argument("--model", default="auto", help="requested model for a prompt")
    route.add_argument("--config")
    route.add_argument("--rules", help="rule table (default: the config's, else shipped)")
    route.set_defaults(func=cmd_route, load=load)

    classify = sub.add_parser(
        "classify", help="decisions for a JSONL file of request bodies (one line out per line)"
    )
    classify.add_argument("file", help="JSONL of request bodies, or - for stdin")
    classify.add_argument(
        "--summary",
        action="store_true",
        help="tier shares and projected cost with and without routing",
    )
    classify.add_argument("--config")
    classify.add_argument("--rules")
    classify.set_defaults(func=cmd_classify, load=load)

    ev = sub.add_parser("eval", help="routing quality on labeled data (AUC, APGR, accuracy)")
    ev.add_argument("files", nargs="*", help="labeled JSONL files")
    ev.add_argument(
        "--rules",
        help="rule table to measure (default: shipped); with --from-store: the candidate "
        "(default: one refitted in memory)",
    )
    ev.add_argument(
        "--from-store",
        action="store_true",
        help="the table in force (the config's) and a candidate side by side on the outcome "
        "store's held-back rows (and the files given)",
    )
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ev.add_argument("--plot", help="write the cost/quality curve to this PNG (matplotlib)")
    ev.add_argument(
        "--curve",
        action="store_true",
        help="print the cost/quality curve per file (PGR, recalls, bill at strong shares 0..1)",
    )
    ev.add_argument(
        "--recall",
        type=float,
        metavar="R",
        help="print per file the savings at frontier recall >= R (e.g. 0.95)",
    )
    ev.add_argument(
        "--config",
        help="catalog for the costs (default: the built-in catalog); with --from-store also "
        "the store and the table in force",
    )
    ev.add_argument(
        "--by-language",
        action="store_true",
        help="print recall of each class per file and language (the row's `language`, "
        "else a guess)",
    )
    ev.set_defaults(func=cmd_eval, load=load)

    cal = sub.add_parser("calibrate", help="fit the rule table's weights and thresholds")
    cal.add_argument("files", nargs="*", help="labeled JSONL files")
    cal.add_argument(
        "--out",
        required=True,
        help="where to write the fitted table: OUT (TOML) and OUT's .lexicons.msgpack beside it",
    )
    cal.add_argument(
        "--from-store",
        action="store_true",
        help="refit the table in force on the outcome store's labeled rows (and the files "
        "given); written only if it beats the table in force on held-back rows (exit 1 if not)",
    )
    cal.add_argument("--config", help="with --from-store: the config (store, table, [learn])")
    cal.add_argument("--seed", help="table whose features to refit (default: shipped)")
    cal.add_argument(
        "--target-recall",
        type=float,
        help="thresholds from held-out risk: frontier where the out-of-fold frontier recall "
        "on the judged (tier-labeled) sets reaches R (default 0.95); the table gets a risk "
        "map and presets",
    )
    cal.add_argument(
        "--target-quality",
        type=float,
        help="instead: the frontier threshold that keeps this share of the weak-to-strong "
        "quality gap over all sets (the first tables' rule; no risk map)",
    )
    cal.add_argument("--cv", type=int, default=5, help="cross-validation folds (0: none)")
    cal.add_argument(
        "--lodo", action="store_true", help="also report leave-one-dataset-out figures"
    )
    cal.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="DATASET=W",
        help="weight of a dataset (file stem) in the fit; each counts 1 by default",
    )
    cal.set_defaults(func=cmd_calibrate, load=load)
