"""Writing a routed answer to the client: whole (with the cache's part) or streamed, in
chat's shape or through another inbound format's encoder."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from aiohttp import web

from gearshift.governance.cache import Entry
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion
from gearshift.serve import cached, relay
from gearshift.serve.appkeys import CACHE, LIVE, REQUEST_ID, STREAMS
from gearshift.serve.exchange import Exchange

log = logging.getLogger("gearshift")


async def chat_answer(
    request: web.Request,
    chat: ChatRequest,
    ex: Exchange,
    answer: Completion | relay.Relay | Entry,
) -> web.StreamResponse:
    if isinstance(answer, Entry):
        return await cached.replay(request, chat, ex, answer, request[REQUEST_ID])
    if isinstance(answer, relay.Relay):
        return await stream_answer(request, answer, ex)
    headers = relay.whole(ex, chat, answer)
    cached.store(request.app[CACHE], ex, answer.body)
    return web.Response(body=answer.body, content_type="application/json", headers=headers)


class StreamEncoder(Protocol):
    """An inbound format's stream: chat SSE pieces in, the client's own events out."""

    def feed(self, piece: bytes) -> bytes: ...

    def end(self) -> bytes: ...


async def stream_answer(
    request: web.Request,
    stream: relay.Relay,
    ex: Exchange,
    encoder: StreamEncoder | None = None,
) -> web.StreamResponse:
    """Write a routed stream to the client: the relay's chat pieces, or what ``encoder``
    makes of them (another inbound format's events; ``end`` closes a cut stream in its own
    way)."""
    streams = request.app[STREAMS]
    streams.add(stream)
    try:
        response = web.StreamResponse(
            status=200,
            headers={
                "content-type": "text/event-stream; charset=utf-8",
                "cache-control": "no-cache",
                "x-request-id": request[REQUEST_ID],
                **relay.decision_headers(ex),
            },
        )
        await response.prepare(request)
        # The client's bytes, in its own format, kept for the cache (up to the entry limit).
        kept: list[bytes] | None = [] if ex.cache_key else None
        size, limit = 0, request[LIVE].config.cache.max_entry_bytes
        sample = ex.sample  # chosen for the outcome store: its chat pieces are kept
        async for piece in stream.pieces():
            if sample is not None:
                sample.keep(piece)
            if encoder is not None:
                piece = encoder.feed(piece)
                if not piece:
                    continue
            if kept is not None:
                size += len(piece)
                if size <= limit:
                    kept.append(piece)
                else:
                    kept = None  # too large to store
            began = time.perf_counter()
            await response.write(piece)
            ex.client_s += time.perf_counter() - began
        if encoder is not None:
            tail = encoder.end()
            if tail:
                if kept is not None:
                    kept.append(tail)
                await response.write(tail)
        await response.write_eof()
        if kept is not None and stream.complete:
            stream.close()  # settles the account the entry needs
            cached.store(request.app[CACHE], ex, b"".join(kept))
    except ConnectionResetError:
        # The client went away mid-stream: nobody to answer; the finally drops upstream.
        log.debug("request %s: client disconnected mid-stream", request[REQUEST_ID])
        ex.status = 499
    finally:
        # Reached on success, on a client disconnect (write fails or the handler is
        # cancelled) and on any error: the upstream call never outlives the client.
        streams.discard(stream)
        stream.close()
    return response


__all__ = ["StreamEncoder", "chat_answer", "stream_answer"]
