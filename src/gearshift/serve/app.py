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
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from gearshift.config import Config, Model
from gearshift.errors import (
    BadRequest,
    GearshiftError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from gearshift.inbound.chat import ChatRequest, parse_chat
from gearshift.observe import Observer, Record, stats
from gearshift.observe.metrics import CONTENT_TYPE
from gearshift.routing import policy
from gearshift.routing.classify import Rules, load_rules
from gearshift.serve import router as route
from gearshift.serve.accounting import Account, Tokens, account, answer_tokens
from gearshift.serve.breaker import Breakers, Clock, SystemClock
from gearshift.serve.transport import Upstream

log = logging.getLogger("gearshift")

CONFIG = web.AppKey("config", Config)
KEY_DIGESTS = web.AppKey("key_digests", tuple)
POLICY = web.AppKey("policy", policy.Policy)
UPSTREAM = web.AppKey("upstream", Upstream)
ROUTER = web.AppKey("router", route.Router)
REQUEST_ID = web.RequestKey("request_id", str)
OBSERVER = web.AppKey("observer", Observer)
DRAINING = web.AppKey("draining", asyncio.Event)
STREAMS: web.AppKey[set[route.Streaming]] = web.AppKey("streams")  # streams being served

_SHUTTING_DOWN = GearshiftError(
    "gearshift is shutting down and its grace period ran out before this stream ended; "
    "the answer above is truncated.",
    code="server_shutting_down",
)

# Probes and the Prometheus scrape need no key (no prompt, key or per-request data there).
_OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: GearshiftError, headers: dict[str, str] | None = None) -> web.Response:
    """The one way an error leaves gearshift: OpenAI's JSON shape with the right status."""
    all_headers = error.headers()
    if headers:
        all_headers.update(headers)
    return web.Response(
        status=error.status, body=error.body(), content_type="application/json", headers=all_headers
    )


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure becomes an OpenAI-shaped error; nothing leaks a traceback."""
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    try:
        response = await handler(request)
    except GearshiftError as exc:
        response = error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(_too_large(request.app[CONFIG]))
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


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Proxy keys, when configured: ``Authorization: Bearer`` or ``x-api-key``."""
    digests = request.app[KEY_DIGESTS]
    if digests and request.path not in _OPEN_PATHS:
        # Fixed-length digests, every key compared whatever matched: neither the time taken
        # nor an early length mismatch says anything about the keys.
        offered = hashlib.sha256(_presented_key(request).encode("utf-8", "surrogateescape"))
        presented = offered.digest()
        ok = False
        for digest in digests:
            ok |= hmac.compare_digest(presented, digest)
        if not ok:
            raise Unauthorized(
                "Incorrect or missing API key for gearshift. Send it as "
                "'Authorization: Bearer <key>'.",
                code="invalid_api_key",
            )
    return await handler(request)


def _presented_key(request: web.Request) -> str:
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("x-api-key", "")


def _too_large(config: Config) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"The request body is larger than gearshift's limit of "
        f"{config.server.max_body_bytes} bytes.",
        code="request_too_large",
    )


def _decision_headers(trace: route.Trace) -> dict[str, str]:
    model = trace.served_by or trace.plan.targets[0]
    plan = trace.plan
    headers = {
        "x-gearshift-model": model.name,
        "x-gearshift-provider": model.provider.name,
        "x-gearshift-tier": plan.tier,
        "x-gearshift-score": plan.score,
        "x-gearshift-reason": plan.reason,
        "x-gearshift-attempts": str(trace.calls),
        "x-gearshift-est-cost-usd": f"{plan.cost_on(model):.8f}",
        "x-gearshift-requested-cost-usd": f"{plan.baseline_cost_usd:.8f}",
    }
    if len(trace.attempts) > 1 or trace.served_by is None:
        headers["x-gearshift-attempt-log"] = ", ".join(str(a) for a in trace.attempts)
    if trace.degraded:
        headers["x-gearshift-degraded"] = trace.degraded
    if trace.upstream_request_id:
        headers["x-upstream-request-id"] = trace.upstream_request_id
    return headers


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


def _log_attempts(request: web.Request, trace: route.Trace, status: int | str) -> None:
    """One line for a request that needed more than one attempt, or failed."""
    if len(trace.attempts) > 1 or trace.served_by is None:
        log.log(
            logging.INFO if trace.served_by is not None else logging.WARNING,
            "request %s: %s -> %s (status %s, attempts: %s)",
            request[REQUEST_ID],
            trace.plan.requested,
            trace.served_by.name if trace.served_by else "nothing",
            status,
            ", ".join(str(a) for a in trace.attempts) or "none",
        )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    config = request.app[CONFIG]
    if (request.content_length or 0) > config.server.max_body_bytes:
        raise _too_large(config)
    body = await request.read()
    record = Record(request[REQUEST_ID], time.perf_counter())
    observer = request.app[OBSERVER]
    observer.metrics.inflight.inc()
    try:
        return await _chat(request, body, record)
    except GearshiftError as exc:  # refused before routing (bad body, unknown model …)
        record.status = exc.status
        raise
    except asyncio.CancelledError:  # the client left
        record.status = 499
        raise
    except Exception:  # a bug: the middleware answers 500 and logs it
        record.status = 500
        raise
    finally:
        # Metrics, stats and the log line wait until the answer is on its way.
        record.ended = time.perf_counter()
        asyncio.get_running_loop().call_soon(observer.finish, record)


async def _chat(request: web.Request, body: bytes, record: Record) -> web.StreamResponse:
    chat = parse_chat(body)
    record.requested, record.stream = chat.model, chat.stream
    if request.app[CONFIG].server.log_prompts:
        record.prompt = orjson.dumps(chat.body.get("messages")).decode()
    budget = _budget(request)
    began = time.perf_counter()
    plan = policy.plan(chat, request.app[POLICY], request.headers)
    record.decision_s = time.perf_counter() - began
    record.tier, record.score = plan.tier, plan.score
    trace = route.Trace(plan, budget)
    router = request.app[ROUTER]
    try:
        if chat.stream:
            return await _stream(request, router, chat, trace, record)
        completion = await router.complete(chat, trace)
    except GearshiftError as exc:
        record.status = exc.status
        return error_response(exc, _decision_headers(trace))
    finally:
        _traced(record, trace)
        _log_attempts(request, trace, record.status)
    served = trace.served_by
    assert served is not None
    tokens = Tokens.from_usage(completion.usage) or Tokens.estimate(
        chat.body, answer_tokens(completion.body)
    )
    record.account = a = account(served, plan.baseline or served, tokens)
    headers = _decision_headers(trace)
    headers["x-gearshift-cost-usd"] = f"{a.cost_usd:.10f}"
    headers["x-gearshift-baseline-usd"] = f"{a.baseline_usd:.10f}"
    headers["x-gearshift-savings-usd"] = f"{a.savings_usd:.10f}"
    return web.Response(body=completion.body, content_type="application/json", headers=headers)


def _traced(record: Record, trace: route.Trace) -> None:
    """Copy what the attempt loop learned into the request's record."""
    record.attempts = trace.attempts
    record.upstream_s += trace.upstream_s
    record.ttfb_s = trace.ttfb_s
    if trace.served_by is not None:
        record.model = trace.served_by.name
        record.provider = trace.served_by.provider.name


async def _stream(
    request: web.Request,
    router: route.Router,
    chat: ChatRequest,
    trace: route.Trace,
    record: Record,
) -> web.StreamResponse:
    def settle(model: Model, usage: Mapping[str, Any] | None, events: int) -> Account:
        tokens = Tokens.from_usage(usage) or Tokens.estimate(chat.body, events)
        record.account = a = account(model, trace.plan.baseline or model, tokens)
        return a

    def annotate(model: Model, usage: Mapping[str, Any]) -> dict[str, Any]:
        # The usage chunk the client asked for carries the cost (headers are long gone);
        # during the attempt's first read the attempt itself is not recorded yet.
        attempts = trace.calls + (trace.served_by is None)
        return settle(model, usage, 0).summary(trace.plan.tier, attempts)

    streaming = await router.open_stream(chat, trace, annotate if chat.client_wants_usage else None)
    streams = request.app[STREAMS]
    streams.add(streaming)
    try:
        response = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": request[REQUEST_ID],
                **_decision_headers(trace),
            },
        )
        await response.prepare(request)
        async for piece in streaming.pieces():
            began = time.perf_counter()
            await response.write(piece)
            record.client_s += time.perf_counter() - began
        await response.write_eof()
    except ConnectionResetError:
        # The client went away mid-stream: nobody to answer; the finally drops upstream.
        log.debug("request %s: client disconnected mid-stream", request[REQUEST_ID])
        record.status = 499
    finally:
        # Reached on success, on a client disconnect (write fails or the handler is
        # cancelled) and on any error: the upstream call never outlives the client.
        streams.discard(streaming)
        streaming.close()
        record.upstream_s += streaming.wait_s
        if record.status == 200 and not streaming.complete:
            record.status = "stream_error"
        if record.account is None:
            settle(streaming.model, streaming.state.usage, streaming.events)
    return response


async def list_models(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    data = [_model_object(alias) for alias in _aliases(config)]
    data += [_model_object(m.name, m.provider.name) for m in config.offered]
    return _json({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    name = request.match_info["name"]
    if name in _aliases(config):
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
        body=request.app[OBSERVER].metrics.exposition(),
        headers={"content-type": CONTENT_TYPE},
    )


def _snapshot(app: web.Application) -> dict[str, Any]:
    per_worker = app[CONFIG].metrics_dir is not None
    return app[OBSERVER].stats.snapshot(app[ROUTER].breakers.states(), per_worker=per_worker)


async def stats_json(request: web.Request) -> web.Response:
    return _json(_snapshot(request.app))


async def status_page(request: web.Request) -> web.Response:
    return web.Response(text=stats.page(_snapshot(request.app)), content_type="text/html")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
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

    grace = app[CONFIG].server.shutdown_grace
    asyncio.get_running_loop().call_later(grace, cut_streams)


async def _upstream_ctx(app: web.Application) -> AsyncIterator[None]:
    upstream = app[UPSTREAM]
    await upstream.start()
    yield
    await upstream.close()


def _aliases(config: Config) -> list[str]:
    if not config.offered:
        return []
    return [*config.routing.auto_aliases, *(f"gearshift/{t}" for t in config.routing.tiers)]


def create_app(
    config: Config,
    rules: Rules | None = None,
    *,
    clock: Clock | None = None,
    rng: random.Random | None = None,
) -> web.Application:
    """The gearshift app for ``config``; the upstream pool opens and closes with it.

    ``rules``: the classifier's table; default the one ``config`` names, else the shipped one.
    ``clock`` and ``rng`` drive breakers, back-off and deadlines (tests inject them).
    """
    if rules is None:
        rules = load_rules(config.routing.rules)
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware],
        client_max_size=config.server.max_body_bytes,
    )
    upstream = Upstream(config.providers, config.server.max_response_bytes)
    app[CONFIG] = config
    app[KEY_DIGESTS] = tuple(
        hashlib.sha256(k.reveal().encode()).digest() for k in config.proxy_keys
    )
    app[POLICY] = policy.Policy.build(config, rules)
    app[UPSTREAM] = upstream
    observer = Observer(config)
    app[OBSERVER] = observer
    clock = clock or SystemClock()
    breakers = Breakers(config.reliability.breaker, clock, observer.metrics.breaker_changed)
    app[ROUTER] = route.Router(
        upstream, config.reliability, clock=clock, rng=rng, breakers=breakers
    )
    app[DRAINING] = asyncio.Event()
    app[STREAMS] = set()
    app.on_shutdown.append(_draining)
    app.cleanup_ctx.append(_upstream_ctx)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
        app.router.add_get(f"{prefix}/models", list_models)
        app.router.add_get(f"{prefix}/models/{{name:.+}}", get_model)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/gearshift/stats", stats_json)
    app.router.add_get("/gearshift", status_page)
    app.router.add_get("/", status_page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app
