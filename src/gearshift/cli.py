"""The ``gearshift`` command.

``serve`` (the proxy; ``--workers N`` for a supervisor of N), ``check-config``,
``mock-upstream`` (the fake OpenAI, Anthropic and Gemini APIs), ``demo`` (gearshift and the
mock, driven by the official SDK), and the offline routing tools: ``route`` (one decision
and its plan), ``classify`` (replay a log of requests), ``eval`` (quality figures on labeled
data) and ``calibrate`` (refit the rule table), and the learning loop's ``outcomes``, ``judge`` and
``report`` (``learn/commands.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import math
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from gearshift import __version__
from gearshift.config import Config, ConfigError, load
from gearshift.mock.flow import BEHAVIOURS
from gearshift.providers import REGISTRY
from gearshift.serve.workers import Supervisor, worker_count

log = logging.getLogger("gearshift")


def _load(path: str | None) -> Config:
    try:
        return load(path, kinds=REGISTRY.keys())
    except ConfigError as exc:
        print(f"gearshift: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where the platform has it (the fast path), asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def slow_path_warnings() -> list[str]:
    """What makes this process slower than it should be: aiohttp without its C HTTP
    parser (pure-Python fallback, or AIOHTTP_NO_EXTENSIONS set), or no uvloop."""
    import aiohttp.http_parser

    found = []
    if not aiohttp.http_parser.HttpRequestParser.__module__.endswith("._http_parser"):
        found.append(
            "aiohttp is running without its C extensions (pure-Python HTTP parser): "
            "expect several times the overhead. Reinstall aiohttp from a wheel for this "
            "platform and do not set AIOHTTP_NO_EXTENSIONS."
        )
    try:
        import uvloop  # noqa: F401
    except ImportError:
        found.append(
            "uvloop is not installed: serving on asyncio's slower event loop "
            "(pip install uvloop; it is a dependency on Linux and macOS)."
        )
    return found


def cmd_serve(args: argparse.Namespace) -> int:
    from gearshift.serve.app import create_app

    # A SIGHUP before the event loop listens (a supervisor's reload while this worker starts)
    # is remembered and done once it listens, instead of ending the process.
    early: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, frame: early.append(signum))
    config = _load(args.config)
    host = args.host or config.server.host
    port = config.server.port if args.port is None else args.port
    if not is_loopback(host) and not config.proxy_keys and not args.insecure_no_auth:
        print(
            f"gearshift: refusing to listen on {host} without proxy keys: anyone who can reach "
            "it could spend your provider credits. Set GEARSHIFT_API_KEYS (or server.api_keys),"
            " or pass --insecure-no-auth.",
            file=sys.stderr,
        )
        return 2
    try:
        workers = worker_count(args.workers)
    except ValueError as exc:
        print(f"gearshift: --{exc}", file=sys.stderr)
        return 2
    if workers > 1 and not args.worker:
        if port == 0:
            print("gearshift: --workers needs a fixed --port (all workers share it)",
                  file=sys.stderr)  # fmt: skip
            return 2
        argv = ["serve", "--worker", "--host", host, "--port", str(port)]
        argv += ["--config", args.config] if args.config else []
        argv += ["--insecure-no-auth"] if args.insecure_no_auth else []
        argv += ["--no-access-log"] if args.no_access_log else []
        log.info("gearshift %s: %d workers on http://%s:%s", __version__, workers, host, port)
        governed = any(p.budgeted or p.limited for p in config.key_policies.values())
        if config.state.backend == "memory" and (governed or config.cache.enabled):
            log.warning(
                "budgets, rate limits and the cache are per worker with the in-process state: "
                "%d workers allow up to %d times each limit; share them with "
                '[state] backend = "redis"',
                workers,
                workers,
            )
        return Supervisor(workers, argv, grace=config.server.shutdown_grace).run()
    for warning in slow_path_warnings():
        log.warning("SLOW PATH: %s", warning)
    if not config.offered:
        log.warning("no model is offered (no provider has an API key); /readyz will say 503")
    for model in config.models.values():
        if not model.offered:
            log.info("model %s not offered: %s", model.name, model.why_not)
    # One JSON object per request on stdout (operational logs stay on stderr).
    if args.no_access_log:  # off, not moved to the logger's stderr
        logging.getLogger("gearshift.access").setLevel(logging.WARNING)
    app = create_app(
        config,
        access_log=None if args.no_access_log else sys.stdout.buffer,
        load_config=lambda: load(args.config, kinds=REGISTRY.keys()),
        on_reloaded=_tell_supervisor() if args.worker else None,
    )
    try:
        _run(app, host, port, config, reuse_port=args.worker, hangups=early)
    except OSError as exc:
        print(f"gearshift: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _tell_supervisor() -> Callable[[], None]:
    """A worker's reload over HTTP, passed to its supervisor, which sends every worker (this
    one too: it reloads the same file again) SIGHUP. Never to another process: the parent
    at start-up, while it is still this worker's parent."""
    supervisor = os.getppid()

    def tell() -> None:
        if os.getppid() == supervisor:
            os.kill(supervisor, signal.SIGHUP)

    return tell


def _run(
    app: Any,
    host: str,
    port: int,
    config: Config,
    *,
    reuse_port: bool = False,
    hangups: Sequence[int] = (),
) -> None:
    from gearshift.serve import server
    from gearshift.serve.appkeys import RELOADER

    spec = config.server
    reloader = app[RELOADER]

    def listening() -> None:
        log.info(
            "gearshift %s listening on http://%s:%s (%d models offered, config %s)",
            __version__, host, port, len(config.offered), config.source,
        )  # fmt: skip
        if hangups:
            reloader.hangup()

    server.raise_open_files()  # before the caps that are read from it
    pending = spec.max_pending or server.default_max_pending()
    guards = server.Guards(
        header_timeout=spec.header_timeout,
        keepalive_timeout=spec.keepalive_timeout,
        max_pending=pending,
        max_pending_per_peer=spec.max_pending_per_peer or max(1, pending // 2),
    )
    server.run(
        app,
        host,
        port,
        guards=guards,
        reuse_port=reuse_port,
        # SIGTERM/SIGINT: stop accepting, let requests and streams in flight finish within
        # the grace period (then they are cancelled: a stream ends with an error event).
        # (gearshift cuts streams itself at the grace; the margin lets them say so.)
        shutdown_timeout=spec.shutdown_grace + 2.0,
        loop=new_event_loop(),
        on_hangup=reloader.hangup,
        on_listen=listening,
    )


def cmd_outcomes(args: argparse.Namespace) -> int:
    from gearshift.learn import commands

    return commands.outcomes(_load(args.config), args.all, args.out)


def cmd_judge(args: argparse.Namespace) -> int:
    from gearshift.learn import commands

    if (args.limit is not None and args.limit < 1) or args.concurrency < 1:
        print("gearshift judge: --limit and --concurrency must be at least 1", file=sys.stderr)
        return 2
    return commands.judge(_load(args.config), args.again, args.limit, args.concurrency, args.json)


def cmd_report(args: argparse.Namespace) -> int:
    from gearshift.learn import commands

    return commands.report(_load(args.config), args.json)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    sys.stdout.write(orjson.dumps(config.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


def catalog_rows(config: Config) -> list[dict[str, object]]:
    """The resolved catalog, a row per model, cheapest tier first: what `gearshift catalog`
    prints (prices USD per 1M tokens; a price not set is the one it defaults to)."""
    rows: list[dict[str, object]] = []
    for m in sorted(config.models.values(), key=lambda m: (m.tier_rank, m.spec.price_out)):
        spec = m.spec
        reasoning = spec.reasoning
        rows.append(
            {
                "model": m.name,
                "provider": m.provider.name,
                "upstream_id": m.upstream_id,
                "tier": m.tier,
                "efforts": list(reasoning.efforts) if reasoning else [],
                "default_effort": reasoning.default if reasoning else None,
                "variants": {
                    effort: {"tier": v.tier, "output_factor": v.output_factor}
                    for effort, v in (reasoning.variants if reasoning else {}).items()
                },
                "api": spec.api if m.provider.kind == "openai" else None,
                "offered": m.offered,
                "price_in": spec.price_in,
                "price_cached_in": spec.price_cached_in,
                "price_cache_write_in": spec.price_cache_write_in,
                "price_out": spec.price_out,
                "price_reasoning_out": spec.price_reasoning_out,
                "context_window": spec.context_window,
                "max_output": spec.max_output,
                "capabilities": list(spec.capabilities),
                "source": spec.source,
                "checked": spec.checked,
            }
        )
    return rows


def cmd_catalog(args: argparse.Namespace) -> int:
    rows = catalog_rows(_load(args.config))
    if args.json:
        sys.stdout.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0

    def price(value: object) -> str:
        return "-" if value is None else f"{value:g}"

    def efforts(row: dict[str, Any]) -> str:
        """``low,medium*,high`` (``*``: the provider's default), then each variant
        ``max->frontier x2``."""
        names = [e + ("*" if e == row["default_effort"] else "") for e in row["efforts"]]
        variants = [f"{e}->{v['tier']} x{v['output_factor']:g}" for e, v in row["variants"].items()]
        return ",".join(names) + ("; " + "; ".join(variants) if variants else "") or "-"

    head = ["model", "provider", "tier", "efforts", "in", "cached", "write", "out", "context",
            "max out", "offered", "source", "checked"]  # fmt: skip
    table = [head] + [
        [
            str(r["model"]),
            str(r["provider"]),
            str(r["tier"]),
            efforts(r),
            price(r["price_in"]),
            price(r["price_cached_in"]),
            price(r["price_cache_write_in"]),
            price(r["price_out"]),
            f"{r['context_window']:,}",
            f"{r['max_output']:,}",
            "yes" if r["offered"] else "no",
            str(r["source"] or "-"),
            str(r["checked"] or "-"),
        ]
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        sys.stdout.write(line.rstrip() + "\n")
    sys.stdout.write(
        "prices: USD per 1M tokens (cached: cached input; write: cache write); efforts: "
        "* the provider's default, effort->tier xN a variant the planner may choose "
        "(N: its output against the default)\n"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from gearshift import doctor, prices

    config = _load(args.config)
    price_file = None
    if args.prices:
        try:
            price_file = prices.load(args.prices, "--prices")
        except ConfigError as exc:
            print(f"gearshift doctor: {exc}", file=sys.stderr)
            return 2
    loop = new_event_loop()
    try:
        report = loop.run_until_complete(doctor.probe(config, price_file))
    finally:
        loop.close()
    for line in report.lines:
        print(line)
    print(f"{report.problems} problem(s)" if report.problems else "no problems")
    return 1 if report.problems else 0


def cmd_mock_upstream(args: argparse.Namespace) -> int:
    from gearshift.mock import MockSettings, run_mock

    settings = MockSettings(
        latency_ms=args.latency_ms,
        chunk_delay_ms=args.chunk_delay_ms,
        chunk_words=args.chunk_words,
        fail=args.fail,
        api_key=args.api_key,
    )
    run_mock(args.host, args.port, settings)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from gearshift.demo import run_demo

    if args.log_level != "DEBUG":  # the table is the output; per-request client logs are noise
        logging.getLogger().setLevel(logging.WARNING)
    loop = new_event_loop()
    try:
        return loop.run_until_complete(run_demo(catalog=args.catalog))
    finally:
        loop.close()


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (0-65535)")
    return port


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
            _load(args.config), args.files, out=None, candidate_path=args.rules,
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

        return commands.from_store(_load(args.config), args.files, out=args.out)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gearshift",
        description="OpenAI-compatible LLM routing proxy: each request goes to the cheapest "
        "model that meets the quality it needs.",
    )
    parser.add_argument("--version", action="version", version=f"gearshift {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", help="TOML or YAML config file (default: embedded catalog)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, help="port to bind (default 8787)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow a non-loopback bind without proxy keys",
    )
    serve.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not write the per-request JSON line on stdout",
    )
    serve.add_argument(
        "--workers",
        default="1",
        help="worker processes sharing the port (SO_REUSEPORT), or 'auto' (one per CPU)",
    )
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    out = sub.add_parser(
        "outcomes",
        help="the outcome store's labeled rows as JSONL, in the routing-dev schema "
        "(what calibrate reads)",
    )
    out.add_argument("--config", help="the config whose [learn] store to read")
    out.add_argument("--all", action="store_true", help="every row, labeled or not")
    out.add_argument("--out", help="write here (default: standard output)")
    out.set_defaults(func=cmd_outcomes)

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
    jd.set_defaults(func=cmd_judge)

    rp = sub.add_parser(
        "report",
        help="per task cluster: share of traffic, savings, judged quality gap (95%% CI); "
        "the requests where the cheaper answer lost",
    )
    rp.add_argument("--config", help="the config whose [learn] store to read")
    rp.add_argument("--json", action="store_true", help="machine-readable output")
    rp.set_defaults(func=cmd_report)

    check = sub.add_parser("check-config", help="validate a config file, print it resolved")
    check.add_argument("file", nargs="?", help="config file (default: embedded catalog)")
    check.set_defaults(func=cmd_check_config)

    cat = sub.add_parser(
        "catalog", help="print the resolved catalog: tiers, prices, limits, sources, dates"
    )
    cat.add_argument("--config", help="TOML or YAML config file (default: embedded catalog)")
    cat.add_argument("--json", action="store_true", help="JSON instead of a table")
    cat.set_defaults(func=cmd_catalog)

    doc = sub.add_parser(
        "doctor",
        help="check the catalog against the providers' model lists (with the configured keys)",
    )
    doc.add_argument("--config", help="TOML or YAML config file (default: embedded catalog)")
    doc.add_argument("--prices", help="a price file (LiteLLM's format) to compare prices with")
    doc.set_defaults(func=cmd_doctor)

    mock = sub.add_parser(
        "mock-upstream", help="run a fake upstream (OpenAI, Anthropic and Gemini APIs)"
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=_port, default=9100)
    mock.add_argument(
        "--latency-ms", type=float, default=0.0, help="delay before each answer / first stream byte"
    )
    mock.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks"
    )
    mock.add_argument("--chunk-words", type=int, default=1, help="words per stream chunk")
    mock.add_argument(
        "--fail",
        help="failure behaviour for every request (" + ", ".join(BEHAVIOURS) + ")",
    )
    mock.add_argument("--api-key", help="require this bearer key")
    mock.set_defaults(func=cmd_mock_upstream)

    demo = sub.add_parser("demo", help="run gearshift against built-in mock providers")
    demo.add_argument(
        "--catalog",
        choices=("default", "2024"),
        default="default",
        help="today's catalog (default) or the seed's 2024 table (an example config now)",
    )
    demo.set_defaults(func=cmd_demo)

    route = sub.add_parser("route", help="show the routing decision for one request")
    route.add_argument("prompt", nargs="?", help="a user prompt")
    route.add_argument("--request", help="a whole request body (JSON file, or - for stdin)")
    route.add_argument("--model", default="auto", help="requested model for a prompt")
    route.add_argument("--config")
    route.add_argument("--rules", help="rule table (default: the config's, else shipped)")
    route.set_defaults(func=cmd_route)

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
    classify.set_defaults(func=cmd_classify)

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
    ev.set_defaults(func=cmd_eval)

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
    cal.set_defaults(func=cmd_calibrate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
