"""Routing: the attempt loop that runs a plan (``policy.plan``) against the upstreams.

This is the only module that orchestrates: it asks an adapter for the upstream bytes, has
``upstream`` send them, and feeds what comes back to the adapter. It knows no wire format.

The loop (``Router._run``) goes through the plan in rounds. In a round each target is tried
once, in plan order, skipping those whose breaker is open, those waiting out a short
Retry-After and those out of this request (a long Retry-After, rejected credentials, a
format that cannot carry the request). A retryable failure moves to the next target at
once; between rounds it waits a full-jitter back-off. It stops at the first success, at a
non-retryable failure (passed on as it is), when ``max_attempts`` upstream calls were made,
or at the request's deadline. Every target meets the required tier; lower tiers are tried
only when the configuration allows degrading, and the response then says so.
"""

from __future__ import annotations

import asyncio
import functools
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from gearshift import sse
from gearshift.config import Model, ReliabilitySpec
from gearshift.errors import (
    CircuitOpen,
    ConnectError,
    CredentialsRejected,
    DeadlineExceeded,
    GearshiftError,
    ProtocolError,
    RateLimited,
    Timeout,
    Unavailable,
    Unsupported,
    UpstreamError,
    error_event,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import REGISTRY, Completion, StreamDecoder, StreamState
from gearshift.routing.policy import Plan
from gearshift.serve.breaker import HALF_OPEN, OPEN, Breaker, Breakers, Clock, SystemClock
from gearshift.serve.transport import Upstream, UpstreamStream, translated

T = TypeVar("T")

# The error a failed request reports, most telling first: a 429 tells the client to slow
# down (with Retry-After), an overloaded or failing upstream beats a transport failure, and
# a format or credentials problem is reported only when nothing else happened.
_TELLING: tuple[type[UpstreamError], ...] = (
    RateLimited,
    Unavailable,
    Timeout,
    ConnectError,
    ProtocolError,
    CredentialsRejected,
    Unsupported,
)
_OUTCOMES: dict[type[GearshiftError], str] = {
    RateLimited: "rate_limited",
    Unavailable: "unavailable",
    Timeout: "timeout",
    ConnectError: "connect",
    ProtocolError: "protocol",
    CredentialsRejected: "credentials",
    Unsupported: "unsupported",
}


@dataclass(slots=True)
class Attempt:
    """One try at one target. ``outcome``: ``ok``, ``open`` (skipped: its breaker is open),
    ``abandoned`` (its breaker opened while this attempt waited), ``deadline``, ``rejected``
    or a failure kind (``unavailable``, ``timeout`` …)."""

    model: str
    provider: str
    outcome: str
    status: int | None = None

    def __str__(self) -> str:
        status = f"/{self.status}" if self.status and self.outcome != "ok" else ""
        return f"{self.model}@{self.provider}:{self.outcome}{status}"


@dataclass(slots=True)
class Trace:
    """What happened to one request: the plan, each attempt, the model that answered.

    ``budget``: the seconds the request may take in all (its deadline, from now).
    ``degraded``: ``"<required>-><served>"`` when a lower tier served it.
    """

    plan: Plan
    budget: float = math.inf
    attempts: list[Attempt] = field(default_factory=list)
    served_by: Model | None = None
    upstream_request_id: str | None = None
    degraded: str | None = None
    upstream_s: float = 0.0  # time in upstream calls and retry waits (perf_counter seconds)
    ttfb_s: float | None = None  # the answering call's time to its first byte / event

    @property
    def calls(self) -> int:
        """Attempts that reached for an upstream (breaker skips not counted)."""
        return sum(1 for a in self.attempts if a.outcome != "open")


@dataclass(slots=True)
class _Run:
    """The state of one request's attempt loop across target groups."""

    deadline: float
    budget: int
    errors: list[UpstreamError] = field(default_factory=list)
    open_for: float = math.inf  # the shortest wait until a skipped breaker probes


class _NoSuccess(Exception):
    """A group of targets is exhausted without an answer (internal)."""


class Router:
    """Runs plans against the upstream pool, with breakers, retries and deadlines."""

    def __init__(
        self,
        upstream: Upstream,
        spec: ReliabilitySpec | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self._upstream = upstream
        self._spec = spec or ReliabilitySpec()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.breakers = breakers or Breakers(self._spec.breaker, self._clock)
        self.breakers.listeners.append(self._breaker_changed)
        # Attempts waiting for a deployment's answer (nothing sent to the client yet), by
        # breaker: when it opens they are abandoned and move on to the next target, instead
        # of waiting out a hung upstream's timeout.
        self._waiting: dict[Breaker, set[asyncio.Timeout]] = {}
        self._abandoned: set[asyncio.Timeout] = set()

    def _breaker_changed(self, breaker: Breaker, old: int) -> None:
        if breaker.state != OPEN:
            return
        waiting = self._waiting.get(breaker)
        if waiting:
            now = asyncio.get_running_loop().time()
            for scope in waiting:
                self._abandoned.add(scope)
                scope.reschedule(now)

    async def complete(self, request: ChatRequest, trace: Trace) -> Completion:
        """A non-streaming answer from the first target that gives one."""

        async def attempt(model: Model, remaining: float) -> Completion:
            adapter = REGISTRY[model.provider.kind]
            out = adapter.encode_request(request, model)
            sent = time.perf_counter()
            reply = await self._upstream.post(model.provider, out)
            trace.ttfb_s = time.perf_counter() - sent
            if reply.status != 200:
                raise adapter.decode_error(reply.status, reply.headers, reply.body, model.provider)
            completion = adapter.decode_response(reply.body, request, model)
            trace.upstream_request_id = _request_id(reply.headers)
            return completion

        return await self._run(trace, attempt, None)

    async def open_stream(
        self,
        request: ChatRequest,
        trace: Trace,
        annotate: Callable[[Model, Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> Streaming:
        """A stream whose first event is in, from the first target that gives one. The
        breaker's verdict on the target that streams waits for the stream's end.
        ``annotate(model, usage)``: the ``gearshift`` object of the usage chunk."""

        async def attempt(model: Model, remaining: float) -> Streaming:
            adapter = REGISTRY[model.provider.kind]
            out = adapter.encode_request(request, model)
            sent = time.perf_counter()
            stream = await self._upstream.open_stream(model.provider, out, total=remaining)
            if stream.status != 200:
                try:
                    body = await stream.read_error_body()
                finally:
                    stream.close()
                raise adapter.decode_error(stream.status, stream.headers, body, model.provider)
            decoder = adapter.stream_decoder(request, model)
            if annotate is not None:
                decoder.state.annotate = functools.partial(annotate, model)
            streaming = Streaming(stream, decoder, model)
            try:
                with translated(model.provider.name, "waiting for the first event"):
                    async with asyncio.timeout(model.provider.timeouts.first_byte):
                        await streaming.first()
            except BaseException:
                streaming.close()
                raise
            trace.ttfb_s = time.perf_counter() - sent
            trace.upstream_request_id = _request_id(stream.headers)
            return streaming

        def hand_over(streaming: Streaming, breaker: Breaker) -> None:
            streaming.breaker = breaker

        return await self._run(trace, attempt, hand_over)

    async def _run(
        self,
        trace: Trace,
        attempt: Callable[[Model, float], Awaitable[T]],
        hand_over: Callable[[T, Breaker], None] | None,
    ) -> T:
        """The plan's targets, then (when degrading is allowed) the lower tiers'."""
        spec = self._spec
        run = _Run(self._clock.now() + min(trace.budget, spec.deadline), spec.max_attempts)
        groups = [trace.plan.targets]
        if spec.degrade and trace.plan.below:
            groups.append(trace.plan.below)
        for lower, targets in enumerate(groups):
            # When lower tiers may serve, the required tier gets one round, not back-offs.
            rounds = 1 if len(groups) > lower + 1 else None
            try:
                result = await self._rounds(trace, targets, run, attempt, hand_over, rounds)
            except _NoSuccess:
                if run.budget <= 0:
                    break
                continue
            if lower and trace.served_by is not None:
                trace.degraded = f"{trace.plan.tier}->{trace.served_by.tier}"
            return result
        raise self._failure(trace, run)

    async def _rounds(
        self,
        trace: Trace,
        targets: list[Model],
        run: _Run,
        attempt: Callable[[Model, float], Awaitable[T]],
        hand_over: Callable[[T, Breaker], None] | None,
        rounds: int | None = None,
    ) -> T:
        clock, spec = self._clock, self._spec
        breakers = self.breakers
        out: set[int] = set()  # not to be tried again in this request
        not_before = [0.0] * len(targets)  # a short Retry-After being waited out
        round_no = 0
        while True:
            for i, model in enumerate(targets):
                if i in out or not_before[i] > clock.now():
                    continue
                if run.budget <= 0:
                    raise _NoSuccess
                breaker = breakers.of(model)
                if not breaker.acquire():
                    if round_no == 0:
                        trace.attempts.append(Attempt(model.name, model.provider.name, "open"))
                    run.open_for = min(run.open_for, breaker.retry_in())
                    continue
                remaining = run.deadline - clock.now()
                if remaining <= 0:
                    breaker.release()
                    raise self._deadline(trace)
                run.budget -= 1
                # A half-open probe gets `first_byte` even when not streaming: nobody else
                # is sent there meanwhile, so a hung upstream would hold its client for the
                # whole `total` (found by the soak).
                probe = breaker.state == HALF_OPEN
                limit = min(remaining, model.provider.timeouts.first_byte) if probe else remaining
                scope = asyncio.timeout(limit)
                waiting = self._waiting.get(breaker)
                if waiting is None:
                    waiting = self._waiting[breaker] = set()
                waiting.add(scope)
                began = time.perf_counter()
                try:
                    async with scope:
                        try:
                            result = await attempt(model, remaining)
                        finally:
                            waiting.discard(scope)  # before any verdict can open the breaker
                except UpstreamError as exc:
                    _verdict(breaker, exc)
                    _record(trace, model, _outcome(exc), exc.upstream_status)
                    if not exc.retryable:
                        raise
                    run.errors.append(exc)
                    if isinstance(exc, Unsupported):
                        run.budget += 1  # refused before sending: no call was made
                    if not exc.transient:
                        out.add(i)
                    elif exc.retry_after is not None:
                        if exc.retry_after > spec.retry_after_max:
                            out.add(i)
                        else:
                            not_before[i] = clock.now() + exc.retry_after
                    continue
                except TimeoutError:
                    if not scope.expired():
                        breaker.release()
                        raise
                    if scope in self._abandoned:  # its breaker opened meanwhile
                        _record(trace, model, "abandoned", None)
                        continue
                    if limit < remaining:  # a probe that did not answer in time
                        breaker.failure()
                        _record(trace, model, "timeout", None)
                        run.errors.append(_probe_timeout(model, limit))
                        continue
                    # The request's deadline passed during the attempt.
                    breaker.release()
                    _record(trace, model, "deadline", None)
                    raise self._deadline(trace) from None
                except BaseException:
                    breaker.release()  # e.g. the client left: no verdict on the upstream
                    raise
                finally:
                    self._abandoned.discard(scope)
                    trace.upstream_s += time.perf_counter() - began
                if hand_over is None:
                    breaker.success()
                else:
                    hand_over(result, breaker)
                _record(trace, model, "ok", 200)
                trace.served_by = model
                return result
            # The round is over: who is left, and how long to wait for them.
            now = clock.now()
            live = [i for i, m in enumerate(targets) if i not in out and breakers.of(m).available()]
            if not live or run.budget <= 0 or (rounds is not None and round_no + 1 >= rounds):
                raise _NoSuccess
            ceiling = spec.backoff_base * 2.0**round_no
            wait = self._rng.uniform(0.0, min(spec.backoff_max, ceiling))
            wait = max(wait, min(not_before[i] for i in live) - now)
            if now + wait >= run.deadline:
                raise _NoSuccess
            round_no += 1
            trace.upstream_s += wait
            await clock.sleep(wait)

    def _deadline(self, trace: Trace) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The request did not complete within its deadline "
            f"({len(trace.attempts)} attempt(s): "
            + ", ".join(str(a) for a in trace.attempts)
            + ").",
            code="deadline_exceeded",
        )

    def _failure(self, trace: Trace, run: _Run) -> GearshiftError:
        """The error for a request no target answered: the most telling upstream error,
        or 503 ``circuit_open`` when breakers cut off every target without a call."""
        if run.errors:
            return min(run.errors, key=_telling)
        if run.open_for < math.inf:
            return CircuitOpen(
                "Every model that may serve this request is failing and paused by its "
                "circuit breaker ("
                + ", ".join(f"{a.model}@{a.provider}" for a in trace.attempts)
                + "); try again shortly.",
                retry_after=run.open_for,
            )
        return self._deadline(trace)


def _probe_timeout(model: Model, seconds: float) -> Timeout:
    name = model.provider.name
    return Timeout(
        f"Provider {name!r} did not answer a health probe within {seconds:g} s.", provider=name
    )


def _telling(error: UpstreamError) -> tuple[int, bool]:
    """Sort key: the kind's place in ``_TELLING``, then an overloaded 503 before a 502."""
    for rank, kind in enumerate(_TELLING):
        if isinstance(error, kind):
            return rank, error.status != 503
    return len(_TELLING), True


def _outcome(error: UpstreamError) -> str:
    for kind, name in _OUTCOMES.items():
        if isinstance(error, kind):
            return name
    return "rejected"


def _verdict(breaker: Breaker, error: UpstreamError) -> None:
    """What a failed call tells the deployment's breaker."""
    if error.health:
        breaker.failure(error.retry_after)
    elif isinstance(error, Unsupported):
        breaker.release()  # refused before sending: says nothing about the upstream
    else:
        breaker.success()  # it answered, properly (a 400 is the request's fault)


def _request_id(headers: Mapping[str, str]) -> str | None:
    return headers.get("x-request-id") or headers.get("request-id")


def _record(trace: Trace, model: Model, outcome: str, status: int | None) -> None:
    trace.attempts.append(Attempt(model.name, model.provider.name, outcome, status))


class Streaming:
    """A started stream: client-ready bytes from ``pieces()``; ``close()`` in a finally.

    The stream contract: whatever happens after the first byte, the client's stream ends
    either with the provider's own terminator or with an explicit ``data: {"error": …}``.
    """

    __slots__ = (
        "_aborted",
        "_chunks",
        "_decoder",
        "_eof",
        "_error_out",
        "_failed",
        "_first",
        "_framer",
        "_stream",
        "breaker",
        "events",
        "model",
        "wait_s",
    )

    def __init__(self, stream: UpstreamStream, decoder: StreamDecoder, model: Model) -> None:
        self._stream = stream
        self._chunks = stream.chunks()
        self._decoder = decoder
        self._framer = sse.Framer()
        self._first = b""
        self._error_out = b""
        self._eof = False
        self._failed: UpstreamError | None = None
        self._aborted: GearshiftError | None = None
        self.model = model
        # Set once the stream is the answer: ``close`` gives it the stream's verdict.
        self.breaker: Breaker | None = None
        self.events = 0  # upstream events read (an estimate of tokens without usage)
        self.wait_s = 0.0  # time spent waiting on upstream reads after the first event

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
        self.wait_s += time.perf_counter() - began
        self.events += len(events)
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
                self.wait_s = 0.0  # so far the attempt's time: counted by the router
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
                    self._failed = Unavailable(
                        state.error.message, provider=self.model.provider.name
                    )
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
        self._stream.close()

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
        """Drop the upstream response, and give the breaker the stream's verdict: finished
        is a success, an upstream failure a failure, anything else (the client left)
        none."""
        self._stream.close()
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
