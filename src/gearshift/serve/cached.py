"""The response cache on the chat path (``governance/cache.py`` decides and stores): a
stored answer looked up after the key's checks, replayed whole or as the stream it was, and
a new answer stored once it is complete. A hit costs nothing and saves the whole baseline."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from gearshift.config import Model
from gearshift.governance import cache as response_cache
from gearshift.governance.cache import Entry, ResponseCache
from gearshift.governance.spec import CacheSpec
from gearshift.inbound.chat import ChatRequest
from gearshift.serve import relay
from gearshift.serve.accounting import Account, Tokens, cost
from gearshift.serve.exchange import Exchange


async def lookup(
    cache: ResponseCache,
    spec: CacheSpec,
    chat: ChatRequest,
    ex: Exchange,
    headers: Mapping[str, str],
    *,
    owner: str,
    models: Mapping[str, Model],
    form: str = "chat",
) -> Entry | None:
    """A stored answer for ``chat``, or None (and, when it is to be stored, where)."""
    plan = response_cache.plan_lookup(
        spec, chat.body, headers.get(response_cache.HEADER), stream=chat.stream,
        owner=owner, form=form,
    )  # fmt: skip
    if plan is None:
        return None
    ex.cache, ex.cache_key = ("miss" if plan.read else "refresh"), plan.key
    entry = await cache.get(plan.key) if plan.read else None
    if entry is None:
        return None
    assert ex.plan is not None
    ex.cache, ex.cache_key = "hit", None
    model = models.get(entry.model) or ex.plan.targets[0]
    baseline = ex.plan.baseline or model
    t = Tokens(entry.prompt_tokens, entry.completion_tokens)
    ex.served_by = model
    ex.account = Account(model, baseline, t, 0.0, cost(baseline, t))
    return entry


def store(cache: ResponseCache | None, ex: Exchange, body: bytes) -> None:
    """Keep what the client got, when this request is to be stored."""
    a = ex.account
    if cache is None or ex.cache_key is None or a is None or ex.served_by is None:
        return
    model = ex.served_by
    entry = Entry(model.name, model.provider.name, a.tokens.prompt, a.tokens.completion, body)
    cache.store(ex.cache_key, entry)


async def replay(
    request: web.Request, chat: ChatRequest, ex: Exchange, entry: Entry, request_id: str
) -> web.StreamResponse:
    """A hit: the stored bytes, whole or as the stream they were."""
    a = ex.account
    assert a is not None
    headers = relay.decision_headers(ex)
    headers["x-gearshift-cost-usd"] = f"{0.0:.10f}"
    headers["x-gearshift-baseline-usd"] = f"{a.baseline_usd:.10f}"
    headers["x-gearshift-savings-usd"] = f"{a.savings_usd:.10f}"
    if not chat.stream:
        return web.Response(body=entry.body, content_type="application/json", headers=headers)
    response = web.StreamResponse(
        status=200,
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-request-id": request_id,
            **headers,
        },
    )
    await response.prepare(request)
    await response.write(entry.body)
    await response.write_eof()
    return response


__all__ = ["lookup", "replay", "store"]
