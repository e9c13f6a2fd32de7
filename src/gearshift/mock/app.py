"""The mock app: the APIs' routes (OpenAI chat and Responses, Anthropic, Gemini), the
``/_mock/`` control endpoints, and serving.

``create_mock_app`` builds it, ``start_mock`` serves it in-process (tests, the demo) and
``run_mock`` serves it until interrupted (``gearshift mock-upstream``).
"""

from __future__ import annotations

import socket
from dataclasses import asdict, fields, replace
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gearshift.mock.anthropic import _Anthropic, anthropic_models
from gearshift.mock.flow import _INVALID, MOCK_STATE, MockSettings, MockState, _json
from gearshift.mock.gemini import _Gemini, _gemini_models
from gearshift.mock.openai import _err, _models, _OpenAI, embeddings
from gearshift.mock.openai_responses import _Responses

_SETTING_NAMES = frozenset(f.name for f in fields(MockSettings))


async def _v1_models(request: web.Request) -> web.Response:
    """``GET /v1/models``: Anthropic's list for a request with ``anthropic-version``,
    OpenAI's otherwise (both APIs serve the same path)."""
    if "anthropic-version" in request.headers:
        return await anthropic_models(request)
    return await _models(request)


async def _get_config(request: web.Request) -> web.Response:
    return _json(asdict(request.app[MOCK_STATE].settings))


async def _set_config(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    try:
        updates: Any = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        updates = None
    if not isinstance(updates, dict):
        return _json(_err("Expected a JSON object of MockSettings fields.", _INVALID), 400)
    unknown = sorted(set(updates) - _SETTING_NAMES)
    if unknown:
        msg = f"Unknown mock setting(s): {', '.join(unknown)}."
        return _json(_err(msg, _INVALID, unknown[0]), 400)
    try:
        state.settings = replace(state.settings, **updates)
    except ValueError as exc:
        return _json(_err(str(exc), _INVALID), 400)
    return _json(asdict(state.settings))


async def _reset(request: web.Request) -> web.Response:
    state = request.app[MOCK_STATE]
    state.reset()
    return _json(asdict(state.settings))


async def _requests(request: web.Request) -> web.Response:
    return _json([asdict(r) for r in request.app[MOCK_STATE].requests])


@web.middleware
async def _openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render aiohttp's own HTTP errors (404, 405, 413...) in OpenAI's error shape."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        bad_url = exc.status in (404, 405)
        msg = f"Invalid URL ({request.method} {request.path})" if bad_url else exc.reason
        return _json(_err(msg, _INVALID), exc.status)


async def _release_hangs(app: web.Application) -> None:
    app[MOCK_STATE]._closing.set()


def create_mock_app(settings: MockSettings | None = None) -> web.Application:
    """Build the mock app; its ``MockState`` is ``app[MOCK_STATE]``.

    Serve it with ``handler_cancellation=True`` (pytest-aiohttp's test server does), or
    client disconnects are neither noticed nor counted.
    """
    # OpenAI accepts large contexts; aiohttp's 1 MiB default would turn them into 413s.
    app = web.Application(middlewares=[_openai_errors], client_max_size=64 * 1024 * 1024)
    app[MOCK_STATE] = MockState(settings)
    openai, anthropic, gemini = _OpenAI(), _Anthropic(), _Gemini()
    responses = _Responses()
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", openai.handle)
        app.router.add_post(f"{prefix}/responses", responses.handle)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_get(f"{prefix}/models", _v1_models)
        app.router.add_post(f"{prefix}/messages", anthropic.handle)
    for method in ("generateContent", "streamGenerateContent"):
        app.router.add_post(f"/v1beta/models/{{model:[^/:]+}}:{method}", gemini.handle)
    app.router.add_get("/v1beta/models", _gemini_models)
    app.router.add_get("/_mock/config", _get_config)
    app.router.add_post("/_mock/config", _set_config)
    app.router.add_post("/_mock/reset", _reset)
    app.router.add_get("/_mock/requests", _requests)
    app.on_shutdown.append(_release_hangs)
    return app


async def start_mock(
    host: str = "127.0.0.1", port: int = 0, settings: MockSettings | None = None
) -> tuple[web.AppRunner, int]:
    """Serve the mock on ``host:port`` (0 picks a free port); return the runner and the port.

    The caller owns the runner (``await runner.cleanup()``); state is ``runner.app[MOCK_STATE]``.
    """
    app = create_mock_app(settings)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        bound = int(runner.addresses[0][1])
    except BaseException:
        await runner.cleanup()
        raise
    return runner, bound


def run_mock(host: str, port: int, settings: MockSettings) -> None:
    """Serve the mock until interrupted (blocking), printing one line with its address."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    # Bind here so that the printed line shows the real port even when port is 0.
    sock = socket.create_server((host, port), family=family)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/v1"

    async def announce(app: web.Application) -> None:
        # Printed from startup, once signal handlers are in place and the socket listens.
        print(f"gearshift mock upstream listening on {url}", flush=True)

    app = create_mock_app(settings)
    app.on_startup.append(announce)
    web.run_app(app, sock=sock, print=None, handler_cancellation=True, access_log=None)
