"""The ``gearshift`` command.

``serve`` (the proxy; ``--workers N`` for a supervisor of N), ``check-config``,
``catalog``, ``doctor``, ``mock-upstream`` (the fake OpenAI, Anthropic and Gemini APIs),
``demo`` (gearshift and the mock, driven by the official SDK); the offline routing tools
``route``, ``classify``, ``eval`` and ``calibrate`` (``offline/commands.py``) and the learning
loop's ``outcomes``, ``judge`` and ``report`` (``learn/commands.py``) add their own parsers.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from gearshift import __version__
from gearshift.config import Config, ConfigError, load
from gearshift.mock.flow import BEHAVIOURS
from gearshift.providers import REGISTRY
from gearshift.serve.workers import Supervisor, cpu_quota, worker_count

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
    if args.workers == "auto" and (quota := cpu_quota()) is not None:
        log.info("--workers auto: %d, under a cgroup CPU quota of %.2f CPUs", workers, quota)
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
        help="worker processes sharing the port (SO_REUSEPORT), or 'auto' (one per CPU, "
        "within a container's CPU quota)",
    )
    serve.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    serve.set_defaults(func=cmd_serve)

    from gearshift.learn import commands as learn_commands
    from gearshift.offline import commands as offline_commands

    learn_commands.add_parsers(sub, _load)
    offline_commands.add_parsers(sub, _load)

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
