"""The ``gearshift`` command: serve, check-config, mock-upstream, demo."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from collections.abc import Sequence
from typing import Any

import orjson

from gearshift import __version__
from gearshift.config import Config, ConfigError, load
from gearshift.providers import REGISTRY

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
        log.warning("uvloop is not installed: serving on the slower asyncio event loop")
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def cmd_serve(args: argparse.Namespace) -> int:
    from gearshift.app import create_app

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
    if not config.offered:
        log.warning("no model is offered (no provider has an API key); /readyz will say 503")
    for model in config.models.values():
        if not model.offered:
            log.info("model %s not offered: %s", model.name, model.why_not)
    try:
        _run(create_app(config), host, port, config)
    except OSError as exc:
        print(f"gearshift: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _run(app: Any, host: str, port: int, config: Config) -> None:
    from aiohttp import web

    web.run_app(
        app,
        host=host,
        port=port,
        access_log=None,
        handler_cancellation=True,
        loop=new_event_loop(),
        print=lambda _: log.info(
            "gearshift %s listening on http://%s:%s (%d models offered, config %s)",
            __version__,
            host,
            port,
            len(config.offered),
            config.source,
        ),
    )


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.file)
    sys.stdout.write(orjson.dumps(config.redacted(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


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
        return loop.run_until_complete(run_demo())
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
    serve.set_defaults(func=cmd_serve)

    check = sub.add_parser("check-config", help="validate a config file, print it resolved")
    check.add_argument("file", nargs="?", help="config file (default: embedded catalog)")
    check.set_defaults(func=cmd_check_config)

    mock = sub.add_parser("mock-upstream", help="run a fake OpenAI-format upstream")
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
        help="failure behaviour for every request "
        "(http-500, http-503, http-429, http-400, http-401, hang, garbage, "
        "stream-cut, error-event, slow)",
    )
    mock.add_argument("--api-key", help="require this bearer key")
    mock.set_defaults(func=cmd_mock_upstream)

    demo = sub.add_parser("demo", help="run gearshift against built-in mock providers")
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
