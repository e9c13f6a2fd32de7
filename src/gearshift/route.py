"""Routing: the plan (which models, in which order) and the attempt loop that runs it.

This is the only module that orchestrates: it asks an adapter for the upstream bytes, has
``upstream`` send them, and feeds what comes back to the adapter. It knows no wire format.
``plan`` picks the required tier (hint or classifier) and orders the candidates that meet
it by estimated cost; the loop moves to the next target on a retryable failure before any
byte reached the client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

from gearshift import sse, tokens
from gearshift.classify import Decision, Rules
from gearshift.config import Config, Model
from gearshift.errors import (
    BadRequest,
    GearshiftError,
    NoTarget,
    NotFound,
    ProtocolError,
    Unavailable,
    UpstreamError,
    error_event,
)
from gearshift.providers import REGISTRY, Completion, StreamDecoder, StreamState
from gearshift.request import ChatRequest, content_text
from gearshift.upstream import Upstream, UpstreamStream, translated


@dataclass(slots=True)
class Attempt:
    """One try at one target: ``outcome`` is ``ok`` or the error's type."""

    model: str
    provider: str
    outcome: str
    status: int | None = None


@dataclass(slots=True)
class Plan:
    """Ordered targets for one request; ``targets[0]`` is the primary, every other target a
    fallback that also meets the required ``tier``."""

    requested: str
    tier: str
    targets: list[Model]
    reason: str
    decision: Decision | None = None
    est_cost_usd: float = 0.0
    baseline_cost_usd: float = 0.0
    prompt_tokens: int = 0

    @property
    def score(self) -> str:
        if self.decision is None or self.decision.hinted:
            return "hint" if self.decision else "none"
        return f"{self.decision.score:.4f}"


@dataclass(slots=True)
class Trace:
    """What happened to one request: the plan, each attempt, the model that answered."""

    plan: Plan
    attempts: list[Attempt] = field(default_factory=list)
    served_by: Model | None = None
    upstream_request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything ``plan`` needs, resolved once at start-up."""

    config: Config
    rules: Rules
    tiers: tuple[str, ...]
    rank: Mapping[str, int]
    baseline: Model | None

    @classmethod
    def build(cls, config: Config, rules: Rules) -> Policy:
        tiers = tuple(config.routing.tiers)
        baseline = None
        if config.routing.baseline_model:
            baseline = config.models[config.routing.baseline_model]
        elif config.offered:
            baseline = max(
                config.offered, key=lambda m: (m.tier_rank, m.spec.price_out, m.spec.price_in)
            )
        if config.routing.thresholds is not None:
            t = config.routing.thresholds
            rules = rules.with_thresholds(t.standard, t.frontier)
        return cls(config, rules, tiers, {t: i for i, t in enumerate(tiers)}, baseline)


def _hinted_tier(request: ChatRequest, headers: Mapping[str, str], policy: Policy) -> str | None:
    """The tier asked for explicitly: header, then the body's ``gearshift`` object."""
    for value, param in (
        (headers.get("x-gearshift-tier"), "x-gearshift-tier"),
        (request.hints.get("tier"), "gearshift.tier"),
    ):
        if value is None:
            continue
        if value not in policy.rank:
            raise BadRequest(
                f"Unknown tier {value!r} in {param}; tiers: {', '.join(policy.tiers)}.",
                param=param,
                code="invalid_value",
            )
        return str(value)
    return None


def _needs(body: Mapping[str, Any], stream: bool, has_image: bool) -> set[str]:
    needs = set()
    if body.get("tools") or body.get("functions"):
        needs.add("tools")
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        needs.add("json_schema")
    if has_image:
        needs.add("vision")
    if stream:
        needs.add("streaming")
    return needs


def estimate_cost(model: Model, tokens_in: int, tokens_out: int) -> float:
    """USD for ``tokens_in`` prompt and ``tokens_out`` completion tokens on ``model``."""
    return (tokens_in * model.spec.price_in + tokens_out * model.spec.price_out) / 1e6


def plan(request: ChatRequest, policy: Policy, headers: Mapping[str, str] | None = None) -> Plan:
    """Choose and order the targets for ``request``.

    Required tier: header ``x-gearshift-tier``, else ``gearshift.tier`` in the body, else a
    ``gearshift/<tier>`` model alias, else the classifier. ``auto`` chooses among every
    offered model; a concrete model is the ceiling (no higher tier unless
    ``allow_upgrade``); ``x-gearshift-route: pin`` (or ``gearshift.route = "pin"``) sends
    the request to the requested model only. Candidates meet the tier, the context window
    and the capabilities the request uses; the cheapest estimated cost goes first.
    """
    config = policy.config
    headers = headers or {}
    name = request.model
    hinted = _hinted_tier(request, headers, policy)
    ceiling: Model | None = None
    if name in config.routing.auto_aliases:
        pass
    elif name.startswith("gearshift/") and name[10:] in policy.rank:
        hinted = hinted or name[10:]
    else:
        ceiling = _requested_model(name, config)

    pinned = (headers.get("x-gearshift-route") or request.hints.get("route")) == "pin"
    if pinned and ceiling is not None:
        return _single(request, policy, ceiling, "pinned")
    if ceiling is None and not config.routing.classifier and hinted is None:
        return _single(request, policy, _default_model(config), "default-model")

    decision = policy.rules.decide(request.body, policy.tiers)
    if hinted is not None:
        decision = dc_replace(decision, tier=hinted, reasons=("hint",), hinted=True)
    need_rank = policy.rank[decision.tier]
    upgrade = config.routing.allow_upgrade
    if ceiling is not None and need_rank > ceiling.tier_rank and not upgrade:
        need_rank = ceiling.tier_rank  # a concrete model is the ceiling: never route up
    top = ceiling.tier_rank if ceiling is not None and not upgrade else len(policy.tiers)
    tokens_in = decision.tokens
    tokens_out = _expected_output(request.body, config)
    if any(m.spec.context_window < tokens_in * 1.25 + tokens_out for m in config.offered):
        # Near some model's context window the estimate is not good enough: count.
        tokens_in = tokens.count_request(request.body)
    needs = _needs(request.body, request.stream, decision.image)
    candidates = [
        m
        for m in config.offered
        if need_rank <= m.tier_rank <= top
        and m.spec.context_window >= tokens_in + tokens_out
        and needs.issubset(m.spec.capabilities)
    ]
    if not candidates and ceiling is not None:
        candidates = [ceiling]
    if not candidates:
        raise NoTarget(
            f"No offered model meets tier {policy.tiers[need_rank]!r}"
            + (f" with {', '.join(sorted(needs))}" if needs else "")
            + f" for a prompt of about {tokens_in} tokens.",
            code="no_model_available",
        )
    candidates.sort(key=lambda m: (estimate_cost(m, tokens_in, tokens_out), -m.tier_rank))
    baseline = ceiling or policy.baseline or candidates[-1]
    return Plan(
        requested=name,
        tier=policy.tiers[need_rank],
        targets=candidates,
        reason=",".join(decision.reasons) or "classifier",
        decision=decision,
        est_cost_usd=estimate_cost(candidates[0], tokens_in, tokens_out),
        baseline_cost_usd=estimate_cost(baseline, tokens_in, tokens_out),
        prompt_tokens=tokens_in,
    )


def _requested_model(name: str, config: Config) -> Model:
    model = config.models.get(name)
    if model is None:
        raise NotFound(
            f"The model `{name}` does not exist or you do not have access to it. "
            "GET /v1/models lists the models this gearshift offers.",
            param="model",
            code="model_not_found",
        )
    if not model.offered:
        raise NotFound(
            f"The model `{name}` is not offered: {model.why_not}.",
            param="model",
            code="model_not_found",
        )
    return model


def _default_model(config: Config) -> Model:
    name = config.routing.default_model
    if name is not None and config.models[name].offered:
        return config.models[name]
    if not config.offered:
        raise NotFound(
            "No model is offered: no provider has an API key configured.",
            param="model",
            code="model_not_found",
        )
    return min(config.offered, key=lambda m: m.spec.price_in + m.spec.price_out)


def _single(request: ChatRequest, policy: Policy, model: Model, reason: str) -> Plan:
    tokens_in = _prompt_chars(request.body)
    cost = estimate_cost(model, tokens_in, _expected_output(request.body, policy.config))
    return Plan(
        requested=request.model,
        tier=model.tier,
        targets=[model],
        reason=reason,
        est_cost_usd=cost,
        baseline_cost_usd=cost,
        prompt_tokens=tokens_in,
    )


def _prompt_chars(body: Mapping[str, Any]) -> int:
    messages = body.get("messages", [])
    return tokens.estimate_chars(
        sum(len(content_text(m.get("content"))[0]) for m in messages if isinstance(m, dict))
    )


def _expected_output(body: Mapping[str, Any], config: Config) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    default = config.routing.expected_output_tokens
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return min(limit, default)
    return default


class Router:
    """Runs plans against the upstream pool."""

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream

    async def complete(self, request: ChatRequest, trace: Trace) -> Completion:
        """A non-streaming answer from the first target that gives one."""
        last: UpstreamError | None = None
        for model in trace.plan.targets:
            adapter = REGISTRY[model.provider.kind]
            try:
                reply = await self._upstream.post(
                    model.provider, adapter.encode_request(request, model)
                )
                if reply.status != 200:
                    raise adapter.decode_error(
                        reply.status, reply.headers, reply.body, model.provider
                    )
                completion = adapter.decode_response(reply.body, model.provider)
                trace.upstream_request_id = _request_id(reply.headers)
            except UpstreamError as exc:
                _record(trace, model, exc)
                if not exc.retryable:
                    raise
                last = exc
                continue
            _record(trace, model, None)
            return completion
        assert last is not None, "a plan always has at least one target"
        raise last

    async def open_stream(self, request: ChatRequest, trace: Trace) -> Streaming:
        """An upstream stream that answered 200, from the first target that gives one."""
        last: UpstreamError | None = None
        for model in trace.plan.targets:
            adapter = REGISTRY[model.provider.kind]
            try:
                stream = await self._upstream.open_stream(
                    model.provider, adapter.encode_request(request, model)
                )
                if stream.status != 200:
                    try:
                        body = await stream.read_error_body()
                    finally:
                        stream.close()
                    raise adapter.decode_error(stream.status, stream.headers, body, model.provider)
            except UpstreamError as exc:
                _record(trace, model, exc)
                if not exc.retryable:
                    raise
                last = exc
                continue
            streaming = Streaming(stream, adapter.stream_decoder(request, model), model)
            try:
                with translated(model.provider.name, "waiting for the first event"):
                    async with asyncio.timeout(model.provider.timeouts.first_byte):
                        await streaming.first()
            except UpstreamError as exc:
                streaming.close()
                _record(trace, model, exc)
                if not exc.retryable:
                    raise
                last = exc
                continue
            except BaseException:
                streaming.close()
                raise
            trace.upstream_request_id = _request_id(stream.headers)
            _record(trace, model, None)
            return streaming
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
            if not pending.strip():
                return None
            events = [pending + b"\n\n"]
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
