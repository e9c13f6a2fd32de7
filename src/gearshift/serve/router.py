"""Routing: the attempt loop that runs a plan (``policy.plan``) against the upstreams.

This is the only module that orchestrates: one attempt function (``Router._attempt``) asks
an adapter for the upstream bytes, has the ``Transport`` send them, and hands what comes
back to the adapter (a whole answer) or to a ``Relay`` (a stream, up to its first content).
It knows no wire format. Every upstream error passes ``relay.upstream_error`` (scrubbed of
the provider's secrets) before anything reads it.

The loop (``Router.run``) goes through the plan in rounds. In a round each target is tried
once, in plan order, skipping those whose breaker is open, those waiting out a short
Retry-After and those out of this request (a long Retry-After, rejected credentials, a
format that cannot carry the request). A model the provider says does not exist is the
catalog's fault when gearshift chose it: it is withdrawn (its breaker out of rotation for
``reliability.withdrawn_cooldown``, one loud log line) and the next target is tried; only
a model the client pinned gets the provider's 404. A retryable failure moves to the next target at
once; between rounds it waits a full-jitter back-off. It stops at the first success, at a
non-retryable failure (passed on as it is), when ``max_attempts`` upstream calls were made,
or at the request's deadline, which runs on the injected clock (``Scope``), as do the
back-off and Retry-After waits: tests drive all of it with a fake clock. Every target
meets the required tier; lower tiers are tried only when the configuration allows
degrading, and the response then says so.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace

from gearshift import reasoning
from gearshift.config import Model, ReliabilitySpec
from gearshift.errors import (
    CircuitOpen,
    ConnectError,
    CredentialsRejected,
    DeadlineExceeded,
    GearshiftError,
    ModelNotFound,
    NoTarget,
    ProtocolError,
    RateLimited,
    Rejected,
    Timeout,
    Unavailable,
    Unsupported,
    UpstreamError,
)
from gearshift.inbound.chat import ChatRequest
from gearshift.providers import REGISTRY, Completion
from gearshift.serve.breaker import HALF_OPEN, OPEN, WITHDRAWN, Breaker, Breakers
from gearshift.serve.clock import Clock, Scope, SystemClock
from gearshift.serve.exchange import Attempt, Exchange
from gearshift.serve.relay import Relay, upstream_error, upstream_request_id
from gearshift.serve.transport import Transport

Answer = Completion | Relay
"""What an attempt gives: a whole answer, or a stream whose first content is in."""

log = logging.getLogger("gearshift.router")


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
    ModelNotFound: "withdrawn",
    RateLimited: "rate_limited",
    Unavailable: "unavailable",
    Timeout: "timeout",
    ConnectError: "connect",
    ProtocolError: "protocol",
    CredentialsRejected: "credentials",
    Unsupported: "unsupported",
}


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
    """Runs plans against a transport, with breakers, retries and deadlines."""

    def __init__(
        self,
        transport: Transport,
        spec: ReliabilitySpec | None = None,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        breakers: Breakers | None = None,
    ) -> None:
        self._transport = transport
        self._spec = spec or ReliabilitySpec()
        self._clock = clock or SystemClock()
        self._rng = rng or random.Random()
        self.breakers = breakers or Breakers(self._spec.breaker, self._clock)
        self.breakers.listeners.append(self._breaker_changed)
        # Attempts waiting for a deployment's answer (nothing sent to the client yet), by
        # breaker: when it opens they are abandoned and move on to the next target, instead
        # of waiting out a hung upstream's timeout.
        self._waiting: dict[Breaker, set[Scope]] = {}
        self._abandoned: set[Scope] = set()

    def retune(self, spec: ReliabilitySpec) -> None:
        """Retries, back-off and deadlines from a reloaded configuration, for the requests
        that start from now on (each reads them once; the breakers keep their own)."""
        self._spec = spec

    def _breaker_changed(self, breaker: Breaker, old: int) -> None:
        if breaker.state != OPEN:  # a withdrawn model's waiting calls get their own 404
            return
        for scope in self._waiting.get(breaker, ()):
            self._abandoned.add(scope)
            scope.expire()

    async def run(self, chat: ChatRequest, ex: Exchange) -> Answer:
        """The answer of the first target that gives one: a ``Completion``, or for a
        stream a ``Relay`` whose first content is in (the breaker's verdict on its target
        waits for the stream's end). Raises the request's error when none does."""
        assert ex.plan is not None
        spec = self._spec
        run = _Run(self._clock.now() + min(ex.budget, spec.deadline), spec.max_attempts)
        groups = [ex.plan.targets]
        if spec.degrade and ex.plan.below:
            groups.append(ex.plan.below)
        for lower, targets in enumerate(groups):
            # When lower tiers may serve, the required tier gets one round, not back-offs.
            rounds = 1 if len(groups) > lower + 1 else None
            try:
                result = await self._rounds(chat, ex, targets, run, rounds)
            except _NoSuccess:
                if run.budget <= 0:
                    break
                continue
            if lower and ex.served_by is not None:
                ex.degraded = f"{ex.plan.tier}->{ex.served_by.tier}"
            return result
        raise self._failure(ex, run)

    async def _attempt(
        self, chat: ChatRequest, ex: Exchange, model: Model, left: float, probe: bool
    ) -> Answer:
        """One call to one target, whole or streamed: encode, send, decode. ``left``: the
        seconds the request has left (bounds a stream's reading too). A half-open probe must
        answer within ``first_byte`` even when not streaming: nobody else is sent there
        meanwhile, so a hung upstream would hold its client for the whole ``total``."""
        adapter = REGISTRY[model.provider.kind]
        ex.dropped = ()
        if model.spec.refuses:
            chat = _without_refused(chat, model, ex)
        if model.spec.reasoning is not None:
            ex.effort = reasoning.effort_for(chat.body, model)
        out = adapter.encode_request(chat, model)
        timeouts = model.provider.timeouts
        sent = time.perf_counter()
        reply = await self._transport.send(
            model.provider,
            out,
            stream=chat.stream,
            total=left,
            first_byte=timeouts.first_byte if probe or chat.stream else None,
        )
        # The last upstream's id, failed or not: what its operator asks for in a support case.
        ex.upstream_request_id = upstream_request_id(reply.headers, model.provider)
        try:
            if reply.status != 200:
                body = await reply.read()
                raise adapter.decode_error(reply.status, reply.headers, body, model.provider)
            if not chat.stream:
                result: Answer = adapter.decode_response(await reply.read(), chat, model)
            else:
                _check_event_stream(reply.headers, model)
                result = Relay(reply, adapter.stream_decoder(chat, model), model, ex, chat)
                # An I/O bound, like the transport's own: on the event loop's time.
                try:
                    async with asyncio.timeout(timeouts.first_byte):
                        await result.first()
                except TimeoutError:
                    name = model.provider.name
                    raise Timeout(
                        f"Provider {name!r} timed out (waiting for the first event).",
                        provider=name,
                    ) from None
        except BaseException:
            reply.close()
            raise
        if not chat.stream:
            reply.close()
        ex.ttfb_s = time.perf_counter() - sent
        return result

    async def _rounds(
        self,
        chat: ChatRequest,
        ex: Exchange,
        targets: list[Model],
        run: _Run,
        rounds: int | None = None,
    ) -> Answer:
        clock, spec = self._clock, self._spec
        breakers = self.breakers
        out: set[int] = set()  # not to be tried again in this request
        pinned = ex.plan is not None and ex.plan.reason == "pinned"
        not_before = [0.0] * len(targets)  # a short Retry-After being waited out
        round_no = 0
        while True:
            for i, model in enumerate(targets):
                if i in out or not_before[i] > clock.now():
                    continue
                if run.budget <= 0:
                    raise _NoSuccess
                breaker = breakers.of(model)
                # A pinned model is the client's choice: it gets the provider's answer
                # (its 404 too) even while gearshift keeps the model out of rotation.
                pinned_past = pinned and breaker.state == WITHDRAWN
                if not pinned_past and not breaker.acquire():
                    if round_no == 0:
                        skipped = "withdrawn" if breaker.state == WITHDRAWN else "open"
                        ex.attempts.append(Attempt(model.label, model.provider.name, skipped))
                    run.open_for = min(run.open_for, breaker.retry_in())
                    continue
                remaining = run.deadline - clock.now()
                if remaining <= 0:
                    breaker.release()
                    raise self._deadline(ex)
                run.budget -= 1
                probe = breaker.state == HALF_OPEN
                scope = Scope(clock, run.deadline)
                waiting = self._waiting.setdefault(breaker, set())
                waiting.add(scope)
                attempt = Attempt(model.label, model.provider.name)
                ex.attempts.append(attempt)
                began = time.perf_counter()
                try:
                    async with scope:
                        try:
                            result = await self._attempt(chat, ex, model, remaining, probe)
                        finally:
                            waiting.discard(scope)  # before any verdict can open the breaker
                except UpstreamError as exc:
                    exc = upstream_error(exc, None, model.provider)
                    attempt.outcome, attempt.status = _outcome(exc), exc.upstream_status
                    if isinstance(exc, ModelNotFound) and not _names_model(exc, model):
                        # A 404 about something else (a cached content, a file): the
                        # request's own fault, passed on like any other 4xx.
                        exc = Rejected(
                            exc.message,
                            provider=exc.provider,
                            upstream_status=404,
                            status=404,
                            code=exc.code,
                            param=exc.param,
                        )
                        attempt.outcome = "rejected"
                    if isinstance(exc, ModelNotFound):
                        if pinned:
                            breaker.release()  # the client's own choice: its 404
                            attempt.outcome = "rejected"
                            raise exc from None
                        self._withdraw(breaker, model, exc)
                    else:
                        _verdict(breaker, exc)
                    if not exc.retryable:
                        raise exc from None
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
                        attempt.outcome = "abandoned"
                        continue
                    # The request's deadline passed during the attempt.
                    breaker.release()
                    attempt.outcome = "deadline"
                    raise self._deadline(ex) from None
                except BaseException:
                    breaker.release()  # e.g. the client left: no verdict on the upstream
                    attempt.outcome = "cancelled"
                    raise
                finally:
                    self._abandoned.discard(scope)
                    ex.upstream_s += time.perf_counter() - began
                if isinstance(result, Relay):
                    result.breaker = breaker
                else:
                    breaker.success()
                attempt.outcome, attempt.status = "ok", 200
                ex.served_by = model
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
            ex.upstream_s += wait
            await clock.sleep(wait)

    def _withdraw(self, breaker: Breaker, model: Model, error: ModelNotFound) -> None:
        cooldown = self._spec.withdrawn_cooldown
        if breaker.state != WITHDRAWN:
            log.error(
                "model %r (provider %r, upstream id %r) does not exist for this key: the "
                "provider answered %s %s. It is out of rotation for %g s; check its catalog "
                "entry ([[models]] name = %r) against the provider's models",
                model.name,
                model.provider.name,
                model.upstream_id,
                error.upstream_status,
                error.code or "",
                cooldown,
                model.name,
            )
        breaker.withdraw(cooldown)

    def _deadline(self, ex: Exchange) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"The request did not complete within its deadline "
            f"({len(ex.attempts)} attempt(s): {ex.attempt_log()}).",
            code="deadline_exceeded",
        )

    def _failure(self, ex: Exchange, run: _Run) -> GearshiftError:
        """The error for a request no target answered: the most telling upstream error,
        or 503 ``circuit_open`` when breakers cut off every target without a call."""
        gone = [a for a in ex.attempts if a.outcome == "withdrawn"]
        if run.errors:
            telling = min(run.errors, key=_telling)
            if isinstance(telling, ModelNotFound):  # nothing else went wrong: all are gone
                return _unavailable(gone)
            return telling
        if gone and len(gone) == len(ex.attempts):
            return _unavailable(gone)
        if run.open_for < math.inf:
            return CircuitOpen(
                "Every model that may serve this request is failing and paused by its "
                "circuit breaker ("
                + ", ".join(f"{a.model}@{a.provider}" for a in ex.attempts)
                + "); try again shortly.",
                retry_after=run.open_for,
            )
        return self._deadline(ex)


_MODEL_GONE_CODES = frozenset({"model_not_found", "DeploymentNotFound"})


def _names_model(error: ModelNotFound, model: Model) -> bool:
    """Whether a 404 is about the model itself: OpenAI's ``model_not_found`` (Azure's
    ``DeploymentNotFound``), or a message naming the model's upstream id (Anthropic's
    "model: claude-…", Gemini's "models/gemini-… is not found")."""
    return error.code in _MODEL_GONE_CODES or model.upstream_id in error.message


def _without_refused(chat: ChatRequest, model: Model, ex: Exchange) -> ChatRequest:
    """``chat`` without the parameters ``model`` refuses (``ModelSpec.refuses``), recorded in
    ``ex.dropped``; or ``Unsupported`` when the model is configured to refuse them instead
    (another model may take them)."""
    present = tuple(p for p in model.spec.refuses if p in chat.body)
    if not present:
        return chat
    if model.spec.on_refused == "error":
        raise Unsupported(
            f"Model {model.name!r} does not accept {', '.join(present)}.",
            provider=model.provider.name,
            param=present[0],
            code="unsupported_parameter",
        )
    ex.dropped = present
    body = {k: v for k, v in chat.body.items() if k not in present}
    return dc_replace(chat, body=body)


def _unavailable(gone: list[Attempt]) -> NoTarget:
    return NoTarget(
        "The models configured for this request are unavailable: the provider says they do "
        "not exist ("
        + ", ".join(f"{a.model}@{a.provider}" for a in gone)
        + "); the gearshift catalog needs updating.",
        code="model_unavailable",
    )


def _check_event_stream(headers: Mapping[str, str], model: Model) -> None:
    """A 200 to a stream request must be an event stream: a proxy's HTML page or a text
    body is an upstream failure (tried elsewhere), never bytes for the client."""
    kind = headers.get("content-type")
    if kind is not None and not kind.lower().lstrip().startswith("text/event-stream"):
        name = model.provider.name
        raise ProtocolError(
            f"Provider {name!r} answered a stream request with {kind[:60]!r}, not an event stream.",
            provider=name,
            code="not_an_event_stream",
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
