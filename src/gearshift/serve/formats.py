"""The inbound formats beyond chat: the OpenAI Responses API and the Anthropic Messages API.

Each is routed exactly as chat is (``app.serve``: the format's module decodes the client's
request into gearshift's chat request; classifier, hints, ceiling, plan, fallbacks,
breakers, accounting, metrics and decision headers are the chat path's own), and the chat
answer is encoded back into the client's format, whole or streamed, whatever provider
served it. The format modules (``inbound/responses.py``, ``inbound/messages.py``) are pure;
this module is their HTTP side: routes, the Responses store (``previous_response_id``,
retrieve, delete, input items; scoped to the proxy key), and errors in each API's shape.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import web

from gearshift.config import Config, ConfigError, Model
from gearshift.errors import BadRequest, GearshiftError, NotFound, ProtocolError
from gearshift.governance.cache import Entry
from gearshift.inbound import messages, responses
from gearshift.inbound.chat import Limits
from gearshift.providers import Completion, Outbound, cached
from gearshift.providers import openai as openai_adapter
from gearshift.serve import relay
from gearshift.serve.accounting import Tokens, account
from gearshift.serve.answers import stream_answer
from gearshift.serve.app import _presented_key, anthropic_error, error_response, serve
from gearshift.serve.appkeys import CACHE, CURRENT, LIVE, OBSERVATION, REQUEST_ID, TRANSPORT
from gearshift.serve.body import json_body, read_body, too_large
from gearshift.serve.cached import replay as replay_cached
from gearshift.serve.cached import store as store_cached
from gearshift.serve.exchange import Exchange
from gearshift.serve.ids import new_id
from gearshift.serve.store import ResponseStore, StoredResponse, open_store, owner_of

log = logging.getLogger("gearshift")
STORE = web.AppKey("responses_store", dict)  # {"store": ResponseStore} once opened
JSON = "application/json"


def add_routes(app: web.Application) -> None:
    """The Responses, Messages, count-tokens and embeddings routes, and the store's
    lifetime (opened on first use, so a gearshift that never serves the Responses API never
    touches the disk; closed with the app)."""
    app[STORE] = {"lock": asyncio.Lock()}
    app.cleanup_ctx.append(_store_ctx)
    for prefix in ("/v1", ""):
        app.router.add_post(f"{prefix}/responses", create_response)
        app.router.add_get(f"{prefix}/responses/{{id}}", get_response)
        app.router.add_delete(f"{prefix}/responses/{{id}}", delete_response)
        app.router.add_get(f"{prefix}/responses/{{id}}/input_items", input_items)
        app.router.add_post(f"{prefix}/messages", create_message)
        app.router.add_post(f"{prefix}/messages/count_tokens", count_tokens)
        app.router.add_post(f"{prefix}/embeddings", embeddings)


# ---------------------------------------------------------------- Responses API


_RETRY_OPEN = 60.0  # seconds before a store that failed to open is tried again


async def _store(app: web.Application) -> ResponseStore:
    """The store, opened on first use (``asyncio.to_thread``: opening may block on an
    integrity check or a busy file). A store that cannot be opened is logged once per
    minute and answered as a 503 ``store_unavailable`` by what needs it; an answer never
    waits on it (``_keep``)."""
    held = app[STORE]
    store: ResponseStore | None = held.get("store")
    if store is not None:
        return store
    async with held["lock"]:
        if held.get("store") is not None:
            opened: ResponseStore = held["store"]
            return opened
        failed = held.get("failed")
        if failed is not None and time.monotonic() - failed < _RETRY_OPEN:
            raise _unavailable()
        try:
            store = await asyncio.to_thread(open_store, app[CURRENT].live.config.store)
        except ConfigError as exc:
            held["failed"] = time.monotonic()
            log.error("the Responses store cannot be opened: %s", exc)
            raise _unavailable() from None
        held["store"] = store
        return store


def _unavailable() -> GearshiftError:
    return GearshiftError(
        "gearshift's Responses store is unavailable (its log says why): stored responses "
        "cannot be continued, retrieved or deleted now.",
        status=503,
        code="store_unavailable",
    )


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    store = app[STORE].pop("store", None)
    if store is not None:
        await store.close()


async def create_response(request: web.Request) -> web.StreamResponse:
    owner = owner_of(_presented_key(request))
    history: list[dict[str, Any]] | None = None
    # The previous response's conversation is looked up before parsing: the body is read
    # once, its previous_response_id peeked, then the format parses with the history.
    body = await _read_limited(request)
    previous = responses.previous_id(body)
    if previous is not None:
        stored = await (await _store(request.app)).get(owner, previous)
        if stored is None:
            raise BadRequest(  # OpenAI's answer: 400, not 404
                f"Previous response with id '{_shown(previous)}' not found.",
                param="previous_response_id",
                code="previous_response_not_found",
            )
        history = stored.conversation

    def parse(_: bytes | bytearray, limits: Limits) -> Any:
        return responses.parse(body, limits, history)

    async def respond(
        request: web.Request, parsed: Any, ex: Exchange, answer: Completion | relay.Relay
    ) -> web.StreamResponse:
        response_id = "resp_" + new_id()
        served = ex.served_by.name if ex.served_by is not None else parsed.chat.model
        if isinstance(answer, relay.Relay):
            encoder = responses.StreamEncoder(parsed, response_id, served)
            reply = await stream_answer(request, answer, ex, encoder)
            if encoder.final is not None:
                await _keep(request.app, owner, parsed, history, encoder.final)
            return reply
        headers = relay.whole(ex, parsed.chat, answer)
        doc = responses.encode(answer.body, parsed, response_id, served)
        await _keep(request.app, owner, parsed, history, doc)
        return web.Response(body=orjson.dumps(doc), content_type=JSON, headers=headers)

    return await serve(request, parse, respond, error_response, body=body)


async def _keep(
    app: web.Application,
    owner: str,
    parsed: Any,
    history: list[dict[str, Any]] | None,
    response: dict[str, Any],
) -> None:
    """Store a finished response when the client asked (``store``, default true): the
    conversation so far (without this request's ``instructions``, which a continuation
    does not inherit) plus the answer, for ``previous_response_id``."""
    if not parsed.store or response.get("status") == "failed":
        return
    messages_ = list(parsed.chat.body.get("messages") or [])
    if parsed.instructions and messages_ and messages_[0].get("role") in ("system", "developer"):
        messages_ = messages_[1:]
    conversation = [*messages_, responses.assistant_message(response)]
    try:
        store = await _store(app)
    except GearshiftError:  # logged; the answer goes out unstored
        return
    await store.put(
        owner,
        response["id"],
        StoredResponse(
            response=response,
            input_items=parsed.input_items,
            conversation=conversation,
            created=time.time(),
        ),
    )


async def _stored(request: web.Request) -> StoredResponse:
    response_id = request.match_info["id"]
    store = await _store(request.app)
    stored = await store.get(owner_of(_presented_key(request)), response_id)
    if stored is None:
        raise NotFound(f"Response with id '{_shown(response_id)}' not found.", param="response_id")
    return stored


async def get_response(request: web.Request) -> web.Response:
    stored = await _stored(request)
    return web.Response(body=orjson.dumps(stored.response), content_type=JSON)


async def delete_response(request: web.Request) -> web.Response:
    response_id = request.match_info["id"]
    store = await _store(request.app)
    if not await store.delete(owner_of(_presented_key(request)), response_id):
        raise NotFound(f"Response with id '{_shown(response_id)}' not found.", param="response_id")
    doc = {"id": response_id, "object": "response", "deleted": True}
    return web.Response(body=orjson.dumps(doc), content_type=JSON)


async def input_items(request: web.Request) -> web.Response:
    """The stored input items, paged as OpenAI pages them: ``order`` (``desc`` by default),
    ``after`` (an item id), ``limit`` (1 to 100, default 20)."""
    stored = await _stored(request)
    query = request.query
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise BadRequest("order must be 'asc' or 'desc'.", param="order", code="invalid_value")
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise BadRequest(
            "limit must be an integer from 1 to 100.", param="limit", code="invalid_value"
        )
    items = list(stored.input_items)
    if order == "desc":
        items.reverse()
    after = query.get("after")
    if after is not None:
        ids = [item.get("id") for item in items]
        if after in ids:
            items = items[ids.index(after) + 1 :]
    page = items[:limit]
    doc = {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(items) > limit,
    }
    return web.Response(body=orjson.dumps(doc), content_type=JSON)


def _shown(response_id: str) -> str:
    """An id as an error message quotes it: the client's, so at most 100 characters."""
    return response_id if len(response_id) <= 100 else response_id[:100] + "…"


# ---------------------------------------------------------------- Anthropic Messages API


async def create_message(request: web.Request) -> web.StreamResponse:
    async def respond(
        request: web.Request, chat: Any, ex: Exchange, answer: Completion | relay.Relay | Entry
    ) -> web.StreamResponse:
        if isinstance(answer, Entry):  # from the cache: the bytes a client got before
            return await replay_cached(request, chat, ex, answer, request[REQUEST_ID])
        message_id = "msg_" + new_id()[8:]
        if isinstance(answer, relay.Relay):
            encoder = messages.StreamEncoder(chat, message_id, chat.model)
            return await stream_answer(request, answer, ex, encoder)
        headers = relay.whole(ex, chat, answer)
        body = messages.encode(answer.body, chat, message_id, chat.model)
        store_cached(request.app[CACHE], ex, body)
        return web.Response(body=body, content_type=JSON, headers=headers)

    beta = request.headers.get("anthropic-beta")

    def parse(body: bytes | bytearray, limits: Limits) -> Any:
        chat = messages.parse(body, limits)
        if beta:  # passed to an Anthropic upstream only (providers/anthropic.py)
            chat.hints["anthropic_beta"] = beta
        return chat

    return await serve(request, parse, respond, anthropic_error)


async def count_tokens(request: web.Request) -> web.Response:
    body = await _read_limited(request)
    return web.Response(body=messages.count_tokens(body, request[LIVE].limits), content_type=JSON)


# ---------------------------------------------------------------- embeddings


async def embeddings(request: web.Request) -> web.Response:
    """``POST /v1/embeddings``: passed through to the configured embedding model the client
    names (``embeddings`` in the config; ``auto`` or a model not named: the first offered),
    no routing; its usage is accounted (cost in ``x-gearshift-cost-usd``, in /metrics and
    /gearshift/stats like any answer)."""
    config = request[LIVE].config
    doc = json_body(await _read_limited(request))
    if not isinstance(doc, dict) or not isinstance(doc.get("model"), str):
        raise BadRequest(
            "you must provide a model parameter (a string)", param="model", code="invalid_type"
        )
    if doc.get("input") is None:
        raise BadRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    target = _embedding_model(config, doc["model"])
    ex = Exchange(request[REQUEST_ID], time.perf_counter())
    ex.requested, ex.served_by = doc["model"], target
    observation = request.app[OBSERVATION]
    observation.begin(ex)
    try:
        provider = target.provider
        out = Outbound(
            url=provider.base_url + "/embeddings",
            headers=cached(provider, "openai.headers", openai_adapter._headers),
            body=orjson.dumps({**doc, "model": target.upstream_id}),
        )
        began = time.perf_counter()
        reply = await request.app[TRANSPORT].send(
            provider, out, stream=False, total=provider.timeouts.total
        )
        try:
            body = await reply.read()
        finally:
            reply.close()
        ex.upstream_s = time.perf_counter() - began
        if reply.status != 200:
            raise openai_adapter.decode_error(reply.status, reply.headers, body, provider)
        try:
            answer = orjson.loads(body)
        except orjson.JSONDecodeError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            raise ProtocolError(
                f"Provider {provider.name!r} sent an embeddings answer without data.",
                provider=provider.name,
            )
        usage = answer.get("usage")
        prompt = usage.get("prompt_tokens") if isinstance(usage, dict) else None
        tokens = Tokens(prompt=prompt if isinstance(prompt, int) else 0, completion=0)
        ex.account = account(target, target, tokens)
        headers = {
            "x-gearshift-model": target.name,
            "x-gearshift-provider": provider.name,
            "x-gearshift-cost-usd": f"{ex.account.cost_usd:.10f}",
        }
        return web.Response(body=body, content_type=JSON, headers=headers)
    except GearshiftError as exc:
        ex.status = exc.status
        raise
    except BaseException:
        ex.status = 499
        raise
    finally:
        ex.ended = time.perf_counter()
        observation.finish(ex)


def _embedding_model(config: Config, name: str) -> Model:
    models = config.embeddings
    model = models.get(name)
    if model is None and (name in config.routing.auto_aliases or not models):
        model = next((m for m in models.values() if m.offered), None)
    if model is None or not model.offered:
        why = model.why_not if model is not None else "not an embedding model of this gearshift"
        raise NotFound(
            f"The embedding model `{name}` is not available: {why}.",
            param="model",
            code="model_not_found",
        )
    return model


async def _read_limited(request: web.Request) -> bytes | bytearray:
    config = request[LIVE].config
    if (request.content_length or 0) > config.server.max_body_bytes:
        raise too_large(config)
    return await read_body(request, config)


__all__ = ["STORE", "add_routes"]
