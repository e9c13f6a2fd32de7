"""Routing: the attempt loop that runs a plan (``policy.plan``) against the upstreams.

This is the only module that orchestrates: it asks an adapter for the upstream bytes, has
``upstream`` send them, and feeds what comes back to the adapter. It knows no wire format.
The loop moves to the next target on a retryable failure before any byte reached the
client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from gearshift import sse
from gearshift.config import Model
from gearshift.errors import (
    GearshiftError,
    ProtocolError,
    Unavailable,
    UpstreamError,
    error_event,
)
from gearshift.policy import Plan
from gearshift.providers import REGISTRY, Completion, StreamDecoder, StreamState
from gearshift.request import ChatRequest
from gearshift.upstream import Upstream, UpstreamStream, translated

T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    """One try at one target: ``outcome`` is ``ok`` or the error's type."""

    model: str
    provider: str
    outcome: str
    status: int | None = None


@dataclass(slots=True)
class Trace:
    """What happened to one request: the plan, each attempt, the model that answered."""

    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    served_by: Model | None = None
    upstream_request_id: str | None = None


class Router:
    """Runs plans against the upstream pool."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def complete(self, request: ChatRequest, trace: Trace) -> Completion:
        """A non-streaming answer from the first target that gives one."""

        async def attempt(model: Model) -> Completion:
            adapter = REGISTRY[model.provider.kind]
            reply = await self._upstream.post(
                model.provider, adapter.encode_request(request, model)
            )
            if reply.status != 200:
                raise adapter.decode_error(reply.status, reply.headers, reply.body, model.provider)
            completion = adapter.decode_response(reply.body, request, model)
            trace.upstream_request_id = _request_id(reply.headers)
            return completion

        return await _first_success(trace, attempt)

    async def open_stream(self, request: ChatRequest, trace: Trace) -> Streaming:
        """A stream whose first event is in, from the first target that gives one."""

        async def attempt(model: Model) -> Streaming:
            adapter = REGISTRY[model.provider.kind]
            stream = await self._upstream.open_stream(
                model.provider, adapter.encode_request(request, model)
            )
            if stream.status != 200:
                try:
                    body = await stream.read_error_body()
                finally:
                    stream.close()
                raise adapter.decode_error(stream.status, stream.headers, body, model.provider)
            streaming = Streaming(stream, adapter.stream_decoder(request, model), model)
            try:
                with translated(model.provider.name, "waiting for the first event"):
                    async with asyncio.timeout(model.provider.timeouts.first_byte):
                        await streaming.first()
            except BaseException:
                streaming.close()
                raise
            trace.upstream_request_id = _request_id(stream.headers)
            return streaming

        return await _first_success(trace, attempt)


async def _first_success(trace: Trace, attempt: Callable[[Model], Awaitable[T]]) -> T:
    """The attempt loop: each target in plan order until one succeeds; a retryable failure
    moves on, any other is raised at once; every attempt is recorded in ``trace``."""
    last: UpstreamError | None = None
    for model in trace.plan.targets:
        try:
            result = await attempt(model)
        except UpstreamError as exc:
            _record(trace, model, exc)
            if not exc.retryable:
                raise
            last = exc
            continue
        _record(trace, model, None)
        return result
    assert last is not None, "a plan always has at least one target"
    raise last


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


def _record(trace: Trace, model: Model, error: GearshiftError | None) -> None:
    if error is None:
        trace.served_by = model
        trace.attempts.append(Attempt(model.name, model.provider.name, "ok", 200))
    else:
        status = error.upstream_status if isinstance(error, UpstreamError) else None
        trace.attempts.append(
            Attempt(model.name, model.provider.name, type(error).__name__, status)
        )


class Streaming:
    """A started stream: client-ready bytes from ``pieces()``; ``close()`` in a finally.

    The stream contract: whatever happens after the first byte, the client's stream ends
    either with the provider's own terminator or with an explicit ``data: {"error": …}``.
    """

    __slots__ = (
        "_chunks",
        "_decoder",
        "_eof",
        "_error_out",
        "_first",
        "_framer",
        "_stream",
        "model",
    )

    def __init__(self, stream: UpstreamStream, decoder: StreamDecoder, model: Model) -> None:
        self._stream = stream
        self._chunks = stream.chunks()
        self._decoder = decoder
        self._framer = sse.Framer()
        self._first = b""
        self._error_out = b""
        self._eof = False
        self.model = model

    @property
    def state(self) -> StreamState:
        return self._decoder.state

    def _cut(self, what: str) -> ProtocolError:
        name = self.model.provider.name
        return ProtocolError(f"Provider {name!r} {what}.", provider=name, code="stream_truncated")

    async def _next(self) -> bytes | None:
        """Client bytes from the next upstream read (maybe empty); None once it has ended.

        Events after an error are dropped; the decoder's own rendering of the error (if it
        has one) is kept in ``_error_out``.
        """
        if self._eof:
            return None
        try:
            data = await anext(self._chunks)
        except StopAsyncIteration:
            self._eof = True
            pending = self._framer.pending
            # A last event without its blank line still counts (some servers end so).
            events = [pending + b"\n\n"] if pending.strip() else []
        else:
            try:
                events = self._framer.feed(data)
            except sse.EventTooLarge:
                raise self._cut("sent an event too large to be SSE") from None
        state = self._decoder.state
        outs: list[bytes] = []
        for event in events:
            out = self._decoder.feed(event)
            if state.error is not None:
                self._error_out = out if state.error_sent else error_event(state.error)
                break
            outs.append(out)
            if state.finished:
                break  # nothing may follow the terminator (a late error, a ping …)
        if self._eof and state.error is None and not state.finished:
            outs.append(self._decoder.end())  # e.g. Gemini: the end of the body ends a stream
            if not state.finished and not any(outs):
                return None
        return b"".join(outs)

    async def first(self) -> None:
        """Read up to the first bytes for the client. Before them a failure is still
        invisible, so it is raised (retryable) for the attempt loop: an error as the first
        event, or an end before any event."""
        state = self._decoder.state
        while True:
            out = await self._next()
            if out:
                self._first = out
                return
            if state.error is not None:
                raise Unavailable(
                    state.error.message, provider=self.model.provider.name, code=state.error.code
                )
            if out is None:
                raise self._cut("ended the stream before sending anything")

    async def pieces(self) -> AsyncIterator[bytes]:
        state = self._decoder.state
        if self._first:
            yield self._first
        try:
            while True:
                if state.error is not None:
                    yield self._error_out
                    return
                if state.finished:
                    return
                out = await self._next()
                if out is None:
                    break
                if out:
                    yield out
        except UpstreamError as exc:
            yield error_event(exc)
            return
        yield error_event(
            self._cut("ended the stream before it was complete; the answer above is truncated")
        )

    def close(self) -> None:
        self._stream.close()
