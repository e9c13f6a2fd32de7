"""The aiohttp application: handlers, middlewares (errors, request id, auth), and the
upstream pool's lifetime. No routing or translation logic lives here.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

import orjson
from aiohttp import web

from gearshift.config import Config
from gearshift.config import load as config_load
from gearshift.errors import (
    BadRequest,
    GearshiftError,
    MethodNotAllowed,
    NotFound,
    Unauthorized,
)
from gearshift.governance.cache import Entry, ResponseCache
from gearshift.governance.gate import Spend, plan_for_key
from gearshift.governance.governor import Governor
from gearshift.governance.keys import NO_POLICY, KeyPolicy
from gearshift.governance.state import open_state
from gearshift.inbound.chat import ChatRequest, parse_chat
from gearshift.learn.outcomes import SqliteOutcomes
from gearshift.learn.shadow import Shadow
from gearshift.observe import Observation, stats
from gearshift.observe.access import AccessLog, BatchWriter
from gearshift.observe.metrics import CONTENT_TYPE, Metrics
from gearshift.observe.sticky import Sticky
from gearshift.providers import Completion
from gearshift.routing import policy
from gearshift.routing.classify import Rules, load_rules
from gearshift.routing.sticky import Sessions
from gearshift.serve import answers, cached, relay
from gearshift.serve import body as request_body
from gearshift.serve.appkeys import (
    ACCESS_LOG,
    CACHE,
    CURRENT,
    DRAINING,
    GOVERNOR,
    KEY,
    LARGE_BODIES,
    LIVE,
    METRICS,
    OBSERVATION,
    ON_RELOADED,
    RELOADER,
    REQUEST_ID,
    ROUTER,
    SESSIONS,
    SHADOW,
    SPEND,
    STATE,
    STATS,
    STREAMS,
    TRANSPORT,
)
from gearshift.serve.breaker import Breakers
from gearshift.serve.clock import Clock, SystemClock
from gearshift.serve.exchange import Exchange
from gearshift.serve.ids import new_id
from gearshift.serve.live import Current, Live, Loader, Reloader
from gearshift.serve.live import build as build_live
from gearshift.serve.router import Router
from gearshift.serve.server import SERVER_NAME
from gearshift.serve.transport import HTTPTransport, Transport

log = logging.getLogger("gearshift")

_SHUTTING_DOWN = GearshiftError(
    "gearshift is shutting down and its grace period ran out before this stream ended; "
    "the answer above is truncated.",
    code="server_shutting_down",
)

# Probes and the Prometheus scrape need no key (no prompt, key or per-request data there);
# the reload takes the admin key, not a proxy key.
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/gearshift/reload"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: GearshiftError, headers: dict[str, str] | None = None) -> web.Response:
    """The one way an error leaves gearshift: OpenAI's JSON shape with the right status."""
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    return web.Response(
        status=error.status, body=error.body(), content_type="application/json", headers=all_headers
    )


_ID_CHARS = frozenset(range(0x21, 0x7F))


def _request_id(offered: str | None) -> str:
    """The client's ``x-request-id`` when it is one (visible ASCII, at most 128 characters,
    other characters dropped), else a new one: whatever a client sends, the id can go in a
    header, a log line and JSON."""
    if offered:
        if (
            len(offered) <= 128
            and offered.isascii()
            and offered.isprintable()
            and " " not in offered
        ):
            return offered  # the usual case
        kept = "".join(c for c in offered[:256] if ord(c) in _ID_CHARS)[:128]
        if kept:
            return kept
    return new_id()


async def _server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["server"] = SERVER_NAME  # never Python's or aiohttp's versions


def anthropic_error(error: GearshiftError, headers: dict[str, str] | None = None) -> web.Response:
    """An error in the Anthropic Messages API's shape and status codes (its clients parse
    ``{"type": "error", "error": {"type", "message"}}``)."""
    from gearshift.inbound import messages

    status, body = messages.error_body(error)
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    return web.Response(
        status=status, body=body, content_type="application/json", headers=all_headers
    )


def _renderer(path: str) -> RenderError:
    """How an error on ``path`` is shaped: Anthropic's for the Messages API, else OpenAI's."""
    if path.startswith(("/v1/messages", "/messages")):
        return anthropic_error
    return error_response


@web.middleware
async def front_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one middleware (each layer is a coroutine per request): the request id, the proxy
    key check, and every failure as an error in the client's format (OpenAI's shape, or
    Anthropic's on the Messages API); nothing leaks a traceback."""
    request_id = _request_id(request.headers.get("x-request-id"))
    request[REQUEST_ID] = request_id
    request[LIVE] = live = request.app[CURRENT].live  # this request's configuration, to its end
    error_response = _renderer(request.path)
    try:
        request[KEY] = _authorize(request, live) if live.key_digests else NO_POLICY
        response = await handler(request)
    except GearshiftError as exc:
        response = error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(request_body.too_large(live.config))
    except web.HTTPNotFound:
        response = error_response(
            NotFound(f"Unknown path: {request.method} {request.path}", code="unknown_url")
        )
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(
            MethodNotAllowed(
                f"Method {request.method} is not allowed on {request.path}.",
                code="method_not_allowed",
            ),
            {"allow": ", ".join(sorted(exc.allowed_methods))},
        )
    except web.HTTPException as exc:
        response = error_response(GearshiftError(exc.reason, status=exc.status))
    except Exception:  # the last resort: log it, and still answer in the client's format
        log.exception(
            "unhandled error on %s %s (request %s)", request.method, request.path, request_id
        )
        response = error_response(
            GearshiftError("Internal error in gearshift.", code="internal_error")
        )
    if not response.prepared:
        response.headers["x-request-id"] = request_id
    return response


def _authorize(request: web.Request, live: Live) -> KeyPolicy:
    """Proxy keys, when configured: ``Authorization: Bearer`` or ``x-api-key``; the policy of
    the key presented (``NO_POLICY`` for a key without one, and on the open paths; the
    reload path checks its admin key itself)."""
    if request.path in _OPEN_PATHS:
        return NO_POLICY
    presented = _digest(_presented_key(request))
    if not _known(presented, live.key_digests):
        raise Unauthorized(
            "Incorrect or missing API key for gearshift. Send it as 'Authorization: Bearer <key>'.",
            code="invalid_api_key",
        )
    return live.config.key_policies.get(presented, NO_POLICY)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _known(presented: bytes, digests: tuple[bytes, ...]) -> bool:
    """Fixed-length digests, every one compared whatever matched: neither the time taken
    nor an early length mismatch says anything about the keys."""
    ok = False
    for digest in digests:
        ok |= hmac.compare_digest(presented, digest)
    return ok


def _owner(request: web.Request) -> str:
    """Who is asking, as a digest of the proxy key presented (never the key itself)."""
    return hashlib.blake2b(
        _presented_key(request).encode("utf-8", "surrogateescape"), digest_size=12
    ).hexdigest()


def _presented_key(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key", "")


def _budget(request: web.Request) -> float:
    """The client's own deadline for this request, ``x-gearshift-timeout`` (seconds)."""
    value = request.headers.get("x-gearshift-timeout")
    if value is None:
        return math.inf
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or math.isinf(seconds):
        raise BadRequest(
            f"x-gearshift-timeout must be a positive number of seconds, got {value!r}.",
            param="x-gearshift-timeout",
            code="invalid_value",
        )
    return seconds


def _log_attempts(ex: Exchange) -> None:
    """One line for a request that needed more than one attempt, or failed."""
    if len(ex.attempts) > 1 or ex.served_by is None:
        log.log(
            logging.INFO if ex.served_by is not None else logging.WARNING,
            "request %s: %s -> %s (status %s, attempts: %s)",
            ex.request_id,
            ex.requested,
            ex.model or "nothing",
            ex.status,
            ex.attempt_log() or "none",
        )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, parse_chat, answers.chat_answer, error_response)


# What an inbound format (chat, Responses, Anthropic Messages) gives ``serve``: how to read
# its request into gearshift's chat request, how to answer (whole or streamed) from what the
# router returns, and how to render an error after routing, in the client's own shape.
Parse = request_body.Parse
Respond = Callable[[web.Request, Any, Exchange, Any], Awaitable[web.StreamResponse]]
RenderError = Callable[..., web.Response]  # (error, headers=None)


async def serve(
    request: web.Request,
    parse: Parse,
    respond: Respond,
    render_error: RenderError,
    *,
    body: bytes | bytearray | None = None,
) -> web.StreamResponse:
    """One routed request of any inbound format: read and parse (``parse`` returns the
    format's request; its ``chat`` attribute, or itself, is the ChatRequest; ``body``: the
    bytes when the handler read them already), plan, run, answer. Errors before routing are
    raised (the errors middleware renders them in the path's format); after routing
    ``render_error`` renders them with the decision headers."""
    live = request[LIVE]
    config = live.config
    length = request.content_length
    if (length or 0) > config.server.max_body_bytes:
        raise request_body.too_large(config)
    ex = Exchange(request[REQUEST_ID], time.perf_counter())
    observation = request.app[OBSERVATION]
    observation.begin(ex)
    try:
        if body is not None:  # read already (the format needed a look first)
            parsed = parse(body, live.limits)
        else:
            parsed = await request_body.read_chat(request, config, length, parse)
        chat: ChatRequest = parsed if isinstance(parsed, ChatRequest) else parsed.chat
        answer = await _route(request, chat, ex)
        if isinstance(answer, GearshiftError):
            return render_error(answer, relay.decision_headers(ex))
        return await respond(request, parsed, ex, answer)
    except GearshiftError as exc:  # refused before routing (bad body, unknown model …)
        ex.status = exc.status
        raise
    except asyncio.CancelledError:  # the client left
        ex.status = 499
        raise
    except Exception:  # a bug: the middleware answers 500 and logs it
        ex.status = 500
        raise
    finally:
        # Metrics, stats and the log line wait until the answer is on its way.
        ex.ended = time.perf_counter()
        asyncio.get_running_loop().call_soon(observation.finish, ex)


# The APIs whose answers the cache keeps, by path (the Responses API's answers are stored
# objects with ids of their own: never replayed).
_CACHED_FORMS = {
    f"{prefix}/{path}": form
    for prefix in ("/v1", "")
    for path, form in (("chat/completions", "chat"), ("messages", "messages"))
}


async def _route(
    request: web.Request, chat: ChatRequest, ex: Exchange
) -> Completion | relay.Relay | Entry | GearshiftError:
    """Plan and run ``chat``: the answer (a cached one: an ``Entry``), or the error the
    router ended with (the caller renders it in its format, with the decision headers)."""
    ex.requested, ex.stream = chat.model, chat.stream
    live = request[LIVE]
    if live.config.server.log_prompts:
        ex.prompt = orjson.dumps(chat.body.get("messages")).decode()
    ex.budget = _budget(request)
    began = time.perf_counter()
    sessions = request.app[SESSIONS]
    if sessions.enabled:  # a session belongs to one proxy key: never shared between keys
        owner = _owner(request) if live.key_digests else ""
        ex.session, ex.previous = sessions.find(chat.body, request.headers, owner)
    key = request.get(KEY, NO_POLICY)
    if key is NO_POLICY:
        ex.plan = policy.plan(chat, live.policy, request.headers, prefer=ex.previous)
    else:
        routing = live.policy
        ex.plan = await plan_for_key(
            lambda headers: policy.plan(chat, routing, headers, prefer=ex.previous),
            request.headers,
            model=chat.model,
            hints=chat.hints,
            aliases=live.aliases,
            key=key,
            governor=request.app[GOVERNOR] if live.governed else None,
            tiers=routing.tiers,
            ex=ex,
        )
    ex.decision_s = time.perf_counter() - began
    shadow = request.app.get(SHADOW)
    if shadow is not None:
        shadow.choose(ex, chat, live.policy)
    form = _CACHED_FORMS.get(request.path) if live.config.cache.enabled else None
    if form is not None:
        owner = _owner(request) if live.key_digests else ""
        hit = await cached.lookup(
            request.app[CACHE], live.config.cache, chat, ex, request.headers, owner=owner,
            models=live.config.models, form=form,
        )  # fmt: skip
        if hit is not None:
            return hit
    try:
        answer = await request.app[ROUTER].run(chat, ex)
    except GearshiftError as exc:
        ex.status = exc.status
        _log_attempts(ex)
        return exc
    _log_attempts(ex)
    if ex.sample is not None and isinstance(answer, Completion):
        ex.sample.body = answer.body  # (a stream's pieces are kept as they go out)
    return answer


async def list_models(request: web.Request) -> web.Response:
    live = request[LIVE]
    config = live.config
    data = [_model_object(alias) for alias in live.alias_list]
    data += [_model_object(m.name, m.provider.name) for m in config.offered if m.effort is None]
    return _json({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    live = request[LIVE]
    config = live.config
    name = request.match_info["name"]
    if name in live.aliases:
        return _json(_model_object(name))
    model = config.models.get(name)
    if model is None or not model.offered:
        raise NotFound(
            f"The model `{name}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return _json(_model_object(model.name, model.provider.name))


def _model_object(name: str, owner: str = "gearshift") -> dict[str, object]:
    return {"id": name, "object": "model", "created": 0, "owned_by": owner}


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].exposition(),
        headers={"content-type": CONTENT_TYPE},
    )


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    config = request[LIVE].config
    if request.app[DRAINING].is_set():
        return _json({"status": "not ready", "reason": "shutting down"}, status=503)
    if not config.offered:
        return _json(
            {"status": "not ready", "reason": "no model is offered: no provider has an API key"},
            status=503,
        )
    return _json({"status": "ready", "models": len(config.offered)})


def _json(doc: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


async def _draining(app: web.Application) -> None:
    """On shutdown (after the listener closed): streams still running when the grace
    period ends are cut by gearshift, each with an explicit error event, so that clients
    never see a clean end of a truncated answer."""
    app[DRAINING].set()

    streams = app[STREAMS]

    def cut_streams() -> None:
        for streaming in list(streams):
            streaming.abort(_SHUTTING_DOWN)

    grace = app[CURRENT].live.config.server.shutdown_grace
    asyncio.get_running_loop().call_later(grace, cut_streams)


async def _judging(app: web.Application) -> None:
    """``[learn] judge_every``: the stored pairs judged in the background (``gearshift
    judge``'s work, through this process's router and state)."""
    current = app[CURRENT]
    app[SHADOW].start_judging(current.live.config.learn.judge_every, lambda: current.live.policy)


async def _transport_ctx(app: web.Application) -> AsyncIterator[None]:
    transport = app[TRANSPORT]
    await transport.start()
    yield
    await transport.close()


async def _flush_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    if SHADOW in app:
        await app[SHADOW].close()  # shadow calls under way cancelled, the store closed
    await app[SPEND].drain()  # what answered requests cost, into their keys' budgets
    await app[CACHE].drain()
    await app[STATE].close()
    app[METRICS].flush()  # the last tally (a worker's file outlives it)
    writer = app[ACCESS_LOG].writer
    if writer is not None:
        writer.flush()  # the last batch of lines


def create_app(
    config: Config,
    rules: Rules | None = None,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
    transport: Transport | None = None,
    access_log: BinaryIO | None = None,
    load_config: Loader | None = None,
    on_reloaded: Callable[[], None] | None = None,
) -> web.Application:
    """The gearshift app for ``config``; the transport's pool opens and closes with it.

    ``rules``: the classifier's table; default the one ``config`` names, else the shipped one.
    ``clock`` and ``rng`` drive breakers, back-off and deadlines (tests inject them);
    ``transport``: how upstreams are reached (default: HTTP, pooled per provider);
    ``access_log``: where the JSON access-log lines go in batches (``gearshift serve``:
    stdout); without it they go to the ``gearshift.access`` logger. ``load_config``: how a
    reload reads the configuration again (default: from ``config.source`` when that is a
    file); ``on_reloaded``: told after a reload over HTTP succeeded (a worker tells its
    supervisor, which passes the reload on to every worker).
    """
    if rules is None:
        rules = load_rules(config.routing.rules)
    app = web.Application(
        middlewares=[front_middleware],
        client_max_size=config.server.max_body_bytes,
    )
    app[CURRENT] = current = Current(build_live(config, rules))
    app[TRANSPORT] = transport = transport or HTTPTransport(
        config.providers, config.server.max_response_bytes
    )
    app[METRICS] = metrics_ = Metrics(config)
    app[STATS] = stats_ = stats.Stats()
    writer = BatchWriter(access_log) if access_log is not None else None
    app[ACCESS_LOG] = access = AccessLog(config, writer)
    clock = clock or SystemClock()
    app[SESSIONS] = sessions = Sessions(config.routing.sticky, clock.now)
    app[STATE] = state = open_state(config, clock.now)
    app[GOVERNOR] = governor = Governor(
        state, config.state, on_error=lambda: metrics_.state_error(config.state.backend)
    )
    app[SPEND] = spend = Spend(governor)
    app[CACHE] = cache = ResponseCache(state, config.cache)
    sinks: list[Any] = [metrics_, stats_, access, Sticky(sessions), spend]
    breakers = Breakers(config.reliability.breaker, clock, metrics_.breaker_changed)
    app[ROUTER] = router = Router(
        transport, config.reliability, clock=clock, rng=rng, breakers=breakers
    )
    if config.learn.enabled:  # the outcome store opens with the app (a ConfigError if not)
        store = SqliteOutcomes.open(config.learn)
        app[SHADOW] = shadow = Shadow(
            config.learn, store, governor, router.run, rng=rng, state_kind=config.state.backend
        )
        sinks.append(shadow)
        if config.learn.judge_every > 0:
            app.on_startup.append(_judging)
    app[OBSERVATION] = Observation(sinks)

    def swapped(fresh: Live) -> None:  # what outlives a reload learns of the new one
        metrics_.retarget(fresh.config)
        access.retarget(fresh.config)
        router.retune(fresh.config.reliability)
        cache.spec = fresh.config.cache

    if load_config is None and not config.source.startswith("<"):
        source = config.source
        load_config = lambda: config_load(source)  # noqa: E731
    app[RELOADER] = Reloader(current, load_config, [swapped])
    app[ON_RELOADED] = [on_reloaded] if on_reloaded is not None else []
    app[DRAINING] = asyncio.Event()
    app[LARGE_BODIES] = asyncio.Semaphore(config.server.large_body_parses)
    app[STREAMS] = set()
    app.on_response_prepare.append(_server_header)
    app.on_shutdown.append(_draining)
    app.cleanup_ctx.append(_transport_ctx)
    app.cleanup_ctx.append(_flush_ctx)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_get(f"{prefix}/models", list_models)
        app.router.add_get(f"{prefix}/models/{{name:.+}}", get_model)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    from gearshift.serve import admin, formats  # they import this module's helpers

    admin.add_routes(app)
    formats.add_routes(app)
    return app
