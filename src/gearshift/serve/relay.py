"""What flows back to the client: whole answers and streams, the stream's failure
contract, and the settlement of usage and cost into the request's ``Exchange``.

Adapters only decode and report (``StreamState``: usage, the usage chunk the client asked
for, the upstream's error of its own class); this module decides what the client sees:

- a whole answer goes out as the adapter's bytes, with the decision and cost headers;
- a stream sends nothing before its first content (``Relay.first``), so a failure up to
  then is still raised for the router to fall back on, as the decoder's own error class
  (a streamed 429 stays a ``RateLimited`` with its Retry-After, a 400 a ``Rejected``);
- after it, the stream ends either with the provider's terminator or with an explicit
  ``data: {"error": …}`` event, never a silent end;
- the usage chunk carries the ``gearshift`` object (cost, baseline, savings), added here;
- every upstream error is scrubbed of the provider's secrets before it is shown.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

import orjson

from gearshift import sse
from gearshift.config import Model, Provider
from gearshift.errors import (
    GearshiftError,
    ProtocolError,
    UpstreamError,
    error_event,
    retry_after,
    scrub,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import Completion, StreamDecoder, cached
from gearshift.serve.accounting import Account, Tokens, account, answer_tokens
from gearshift.serve.breaker import Breaker
from gearshift.serve.exchange import Exchange
from gearshift.serve.transport import Reply


def secrets_of(provider: Provider) -> tuple[str, ...]:
    """What must never be shown from this provider's answers: its key and the values of
    its configured headers (treated as secrets). Built once per provider: every answer's
    request id is scrubbed with it."""
    return cached(provider, "secrets", _secrets)


def _secrets(provider: Provider) -> tuple[str, ...]:
    values = [provider.api_key.reveal()] if provider.api_key is not None else []
    values += [v for v in provider.headers.values() if len(v) >= 8]
    return tuple(v for v in values if v)


def upstream_error(error: UpstreamError, reply: Reply | None, provider: Provider) -> UpstreamError:
    """An adapter's error, ready to be shown: scrubbed, and with the Retry-After of the
    answer it came in when the error itself carries none."""
    if error.retry_after is None and reply is not None and error.retryable:
        error.retry_after = retry_after(reply.headers)
    return error.scrubbed(secrets_of(provider))


_ID_LIMIT = 128
_PRINTABLE = frozenset(range(0x21, 0x7F))


def upstream_request_id(headers: Mapping[str, str], provider: Provider) -> str | None:
    """The upstream's request id (``x-request-id``, Anthropic's ``request-id``), made safe to
    show as ``x-upstream-request-id``: scrubbed of the provider's secrets, visible ASCII
    only, at most 128 characters."""
    value = headers.get("x-request-id") or headers.get("request-id")
    if not value:
        return None
    value = scrub(value, *secrets_of(provider), limit=4 * _ID_LIMIT)
    if not (value.isascii() and value.isprintable() and " " not in value):
        value = "".join(c for c in value if ord(c) in _PRINTABLE)
    return value[:_ID_LIMIT] or None


def settle(
    ex: Exchange,
    chat: ChatRequest,
    model: Model,
    completion_tokens: int,
    counted: Tokens | None = None,
) -> Account:
    """The request's cost and baseline, from the upstream's usage (``counted``, when the
    caller read it already) or, without it, estimated (the prompt counted, the answer from
    ``completion_tokens``)."""
    assert ex.plan is not None
    tokens = counted or Tokens.from_usage(ex.usage) or Tokens.estimate(chat.body, completion_tokens)
    ex.account = a = account(model, ex.plan.baseline or model, tokens)
    return a


def decision_headers(ex: Exchange) -> dict[str, str]:
    """The ``x-gearshift-*`` headers every answer carries, errors after routing included."""
    plan = ex.plan
    assert plan is not None
    model = ex.served_by or plan.targets[0]
    headers = {
        "x-gearshift-model": model.name,
        "x-gearshift-provider": model.provider.name,
        "x-gearshift-tier": plan.tier,
        "x-gearshift-score": plan.score,
        "x-gearshift-risk": plan.risk,
        "x-gearshift-reason": plan.reason,
        "x-gearshift-attempts": str(ex.calls),
        "x-gearshift-est-cost-usd": f"{plan.cost_on(model):.8f}",
        "x-gearshift-requested-cost-usd": f"{plan.baseline_cost_usd:.8f}",
    }
    if len(ex.attempts) > 1 or ex.served_by is None:
        headers["x-gearshift-attempt-log"] = ex.attempt_log()
    if ex.degraded:
        headers["x-gearshift-degraded"] = ex.degraded
    if ex.upstream_request_id:
        headers["x-upstream-request-id"] = ex.upstream_request_id
    if ex.dropped:
        headers["x-gearshift-dropped-params"] = ",".join(ex.dropped)
    if model.spec.reasoning is not None:  # the effort it ran at ("default": none was sent)
        headers["x-gearshift-effort"] = ex.effort or "default"
    if ex.limit_headers:  # the proxy key's rate limits, as OpenAI reports its own
        headers.update(ex.limit_headers)
    if ex.budget_state:
        headers["x-gearshift-budget"] = ex.budget_state
    if ex.cache:
        headers["x-gearshift-cache"] = ex.cache
    return headers


def whole(ex: Exchange, chat: ChatRequest, completion: Completion) -> dict[str, str]:
    """Settle a whole answer; the headers it goes out with."""
    served = ex.served_by
    assert served is not None
    ex.usage = completion.usage
    counted = Tokens.from_usage(ex.usage)
    a = settle(ex, chat, served, 0 if counted else answer_tokens(completion.body), counted)
    headers = decision_headers(ex)
    headers["x-gearshift-cost-usd"] = f"{a.cost_usd:.10f}"
    headers["x-gearshift-baseline-usd"] = f"{a.baseline_usd:.10f}"
    headers["x-gearshift-savings-usd"] = f"{a.savings_usd:.10f}"
    return headers


class Relay:
    """A started stream: ``first()`` (by the router), then client bytes from ``pieces()``;
    ``close()`` always, in a finally."""

    __slots__ = (
        "_aborted",
        "_chat",
        "_chunks",
        "_decoder",
        "_eof",
        "_error_out",
        "_ex",
        "_failed",
        "_first",
        "_framer",
        "_reply",
        "_started",
        "breaker",
        "model",
    )

    def __init__(
        self,
        reply: Reply,
        decoder: StreamDecoder,
        model: Model,
        ex: Exchange,
        chat: ChatRequest,
    ) -> None:
        self._reply = reply
        self._chunks = reply.chunks()
        self._decoder = decoder
        self._ex = ex
        self._chat = chat
        self._framer = sse.Framer()
        self._first = b""
        self._error_out = b""
        self._eof = False
        self._started = False  # first() returned: reads now count as the stream's time
        self._failed: UpstreamError | None = None
        self._aborted: GearshiftError | None = None
        self.model = model
        # Set by the router once the stream is the answer: ``close`` gives it the verdict.
        self.breaker: Breaker | None = None

    def _cut(self, what: str) -> ProtocolError:
        name = self.model.provider.name
        return ProtocolError(f"Provider {name!r} {what}.", provider=name, code="stream_truncated")

    def _error(self) -> UpstreamError:
        error = self._decoder.state.error
        assert error is not None
        return upstream_error(error, self._reply, self.model.provider)

    def _annotated(self, chunk: bytes) -> bytes:
        """The usage chunk the client asked for, with the cost added as ``gearshift``."""
        state = self._decoder.state
        self._ex.usage = state.usage
        extra = settle(self._ex, self._chat, self.model, 0).summary(self._ex.tier, self._ex.calls)
        return sse.encode(chunk[:-1] + b',"gearshift":' + orjson.dumps(extra) + b"}")

    async def _next(self) -> bytes | None:
        """Client bytes from the next upstream read (maybe empty); None once it has ended.

        Events after an error are dropped; the error's event is kept in ``_error_out``.
        """
        if self._eof:
            return None
        began = time.perf_counter()
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
        if self._started:
            self._ex.upstream_s += time.perf_counter() - began
        self._ex.events += len(events)
        decoder = self._decoder
        state = decoder.state
        outs: list[bytes] = []
        for event in events:
            out = decoder.feed(event)
            if state.usage_chunk is not None:
                out = self._annotated(state.usage_chunk) + out
                state.usage_chunk = None
            if state.error is not None:
                self._error_out = error_event(self._error())
                break
            outs.append(out)
            if state.finished:
                break  # nothing may follow the terminator (a late error, a ping …)
        if self._eof and state.error is None and not state.finished:
            out = decoder.end()  # e.g. Gemini: the end of the body ends a stream
            if state.usage_chunk is not None:
                out = self._annotated(state.usage_chunk) + out
                state.usage_chunk = None
            outs.append(out)
            if not state.finished and not any(outs):
                return None
        return b"".join(outs)

    async def first(self) -> None:
        """Read up to the first bytes for the client. Before them a failure is still
        invisible, so it is raised for the router: an error as the first event (of its own
        class), or an end before any event."""
        state = self._decoder.state
        while True:
            out = await self._next()
            if out:
                self._first = out
                self._started = True
                return
            if state.error is not None:
                raise self._error()
            if out is None:
                raise self._cut("ended the stream before sending anything")

    async def pieces(self) -> AsyncIterator[bytes]:
        state = self._decoder.state
        if self._first:
            yield self._first
        try:
            while True:
                if state.error is not None:
                    self._failed = self._error()
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
            yield self._fail(exc)
            return
        yield self._fail(
            self._cut("ended the stream before it was complete; the answer above is truncated")
        )

    def _fail(self, error: UpstreamError) -> bytes:
        """The final error event: ``abort``'s reason if gearshift cut the stream itself."""
        if self._aborted is not None:
            return error_event(self._aborted)
        self._failed = error
        return error_event(error)

    def abort(self, reason: GearshiftError) -> None:
        """Cut the upstream now (e.g. the shutdown grace ran out): ``pieces`` ends with
        ``reason`` as its error event; the upstream is not blamed."""
        self._aborted = reason
        self._reply.close()

    @property
    def complete(self) -> bool:
        """Ended with the provider's terminator, no error on the way."""
        state = self._decoder.state
        return (
            state.finished
            and state.error is None
            and self._failed is None
            and (self._aborted is None)
        )

    def close(self) -> None:
        """Drop the upstream response; settle what the stream used (when the usage chunk
        did not already); give the breaker the stream's verdict: finished is a success, an
        upstream failure a failure, anything else (the client left) none."""
        self._reply.close()
        ex = self._ex
        if ex.status == 200 and not self.complete:
            ex.status = "stream_error"
        if ex.account is None:
            ex.usage = self._decoder.state.usage
            settle(ex, self._chat, self.model, ex.events)
        breaker, self.breaker = self.breaker, None
        if breaker is None:
            return
        state = self._decoder.state
        if self._failed is not None:
            if self._failed.health:
                breaker.failure(self._failed.retry_after)
            else:
                breaker.release()
        elif state.finished and state.error is None:
            breaker.success()
        else:
            breaker.release()


__all__ = [
    "Relay",
    "decision_headers",
    "secrets_of",
    "settle",
    "upstream_error",
    "upstream_request_id",
    "whole",
]
