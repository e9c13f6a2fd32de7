"""The routing policy: which models may serve a request, in which order.

``plan`` picks the required tier — an explicit hint, else the classifier's score and
thresholds — and orders the offered models that meet it (and the request's context window
and capabilities) by estimated cost. A concrete requested model is the ceiling; a pin sends
the request to it alone. A conversation's previous model (``prefer``, from
``routing/sticky.py``) goes first when it still qualifies. Pure: no I/O; ``route.Router``
runs the plan.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from typing import Any

from gearshift import reasoning
from gearshift.config import Config, Model
from gearshift.errors import BadRequest, NoTarget, NotFound
from gearshift.inbound.chat import ChatRequest, content_text
from gearshift.routing import tokens
from gearshift.routing.classify import Decision, Rules


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
    output_tokens: int = 0
    # Models below the required tier, best first: tried only when the configuration allows
    # degrading (``reliability.degrade``) and every target failed. Empty otherwise.
    below: list[Model] = field(default_factory=list)
    # What the request would have run on without routing: the requested model, or for
    # `auto` the configured baseline (default the most capable offered model).
    baseline: Model | None = None
    # Sticky routing: "hit" (the conversation's previous model qualified and goes first),
    # "moved" (it no longer qualifies: the usual order), "new" (no previous model); None
    # when stickiness does not apply (a pin, a single default model).
    sticky: str | None = None

    def cost_on(self, model: Model) -> float:
        """The estimated cost of this request on ``model`` (e.g. the one that answered)."""
        return estimate_cost(model, self.prompt_tokens, self.output_tokens)

    @property
    def score(self) -> str:
        if self.decision is None or self.decision.hinted:
            return "hint" if self.decision else "none"
        return f"{self.decision.score:.4f}"

    @property
    def risk(self) -> str:
        """The calibrated risk that a cheap model falls short, for ``x-gearshift-risk``."""
        if self.decision is None or self.decision.hinted:
            return "hint" if self.decision else "none"
        return f"{self.decision.risk:.4f}"


@dataclass(frozen=True, slots=True)
class Policy:
    """Everything ``plan`` needs, resolved once at start-up."""

    config: Config
    rules: Rules
    tiers: tuple[str, ...]
    rank: Mapping[str, int]
    baseline: Model | None
    smallest_window: int
    smallest_max_output: int = 0
    # (required rank, top rank, needs) → the offered models meeting them, for requests far
    # from every context window (most): the filter runs once per shape, not per request.
    _shapes: dict[tuple[int, int, frozenset[str]], list[Model]] = field(default_factory=dict)

    @classmethod
    def build(cls, config: Config, rules: Rules) -> Policy:
        tiers = tuple(config.routing.tiers)
        baseline = None
        if config.routing.baseline_model:
            baseline = config.models[config.routing.baseline_model]
        elif config.offered:
            baseline = max(
                (m for m in config.offered if m.effort is None),
                key=lambda m: (m.tier_rank, m.spec.price_out, m.spec.price_in),
            )
        rules = tuned(rules, config)
        smallest = min((m.spec.context_window for m in config.offered), default=0)
        smallest_out = min((m.spec.max_output for m in config.offered), default=0)
        rank = {t: i for i, t in enumerate(tiers)}
        return cls(config, rules, tiers, rank, baseline, smallest, smallest_out)

    def candidates(
        self, need: int, top: int, needs: frozenset[str], tokens_in: int, room: int, out: int
    ) -> list[Model]:
        """Offered models within tiers ``need..top`` that have ``needs`` and room for the
        prompt and the answer, in catalog order (a new list: the caller sorts it)."""
        fits_all = tokens_in + room <= self.smallest_window and out <= self.smallest_max_output
        if fits_all:
            shape = self._shapes.get((need, top, needs))
            if shape is not None:
                return shape[:]
        found = [
            m
            for m in self.config.offered
            if need <= m.tier_rank <= top
            and m.spec.context_window >= tokens_in + room
            and m.spec.max_output >= out
            and needs.issubset(m.spec.capabilities)
        ]
        if fits_all and len(self._shapes) < 1024:
            self._shapes[(need, top, needs)] = found[:]
        return found


def tuned(rules: Rules, config: Config) -> Rules:
    """The table as the configuration sets it: ``uncertainty_lean``, then one of
    ``thresholds`` (score cut-offs), ``max_risk`` or ``preset`` (risks, through the table's
    calibration); none of them: the table's own thresholds."""
    routing = config.routing
    if routing.uncertainty_lean is not None:
        rules = rules.with_lean(routing.uncertainty_lean)
    if routing.thresholds is not None:
        t = routing.thresholds
        return rules.with_thresholds(t.standard, t.frontier)
    if routing.max_risk is not None:
        return rules.with_risk(routing.max_risk)
    if routing.preset is not None:
        return rules.with_risk(rules.preset_risk(routing.preset))
    return rules


def _hinted_tier(request: ChatRequest, headers: Mapping[str, str], policy: Policy) -> str | None:
    """The tier asked for explicitly: header, then the body's ``gearshift`` object."""
    if not request.hints and "x-gearshift-tier" not in headers:
        return None
    for value, param in (
        (headers.get("x-gearshift-tier"), "x-gearshift-tier"),
        (request.hints.get("tier"), "gearshift.tier"),
    ):
        if value is None:
            continue
        value = value.strip().lower() if isinstance(value, str) else value
        if not isinstance(value, str) or value not in policy.rank:
            raise BadRequest(
                f"Unknown tier {value!r} in {param}; tiers: {', '.join(policy.tiers)}.",
                param=param,
                code="invalid_value",
            )
        return str(value)
    return None


def _needs(body: Mapping[str, Any], stream: bool, has_image: bool) -> frozenset[str]:
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
    return frozenset(needs)


def estimate_cost(model: Model, tokens_in: int, tokens_out: int) -> float:
    """USD for ``tokens_in`` prompt and ``tokens_out`` completion tokens on ``model`` (an
    effort variant spends ``output_factor`` times the output)."""
    out = tokens_out * model.output_factor
    return (tokens_in * model.spec.price_in + out * model.spec.price_out) / 1e6


def plan(
    request: ChatRequest,
    policy: Policy,
    headers: Mapping[str, str] | None = None,
    prefer: str | None = None,
) -> Plan:
    """Choose and order the targets for ``request``.

    Required tier: header ``x-gearshift-tier``, else ``gearshift.tier`` in the body, else a
    ``gearshift/<tier>`` model alias, else the classifier. ``auto`` chooses among every
    offered model; a concrete model is the ceiling (no higher tier unless
    ``allow_upgrade``); ``x-gearshift-route: pin`` (or ``gearshift.serve.router = "pin"``) sends
    the request to the requested model only. Candidates meet the tier, the context window
    and the capabilities the request uses; the cheapest estimated cost goes first.

    ``prefer``: the label of the model that served the conversation's previous turn. When it
    is one of the candidates it goes first, the others after it in cost order (its
    fallbacks), ``sticky`` is "hit" and ``reason`` ends in ``sticky``; when it is not (the
    tier rose above it, it lacks a capability, it is no longer offered) the plan is the
    usual one and ``sticky`` "moved". A pin ignores it.
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

    route = headers.get("x-gearshift-route") or request.hints.get("route") or "auto"
    route = route.strip().lower() if isinstance(route, str) else route
    if route not in ("auto", "pin"):
        raise BadRequest(
            "x-gearshift-route (or gearshift.serve.router) must be 'pin' or 'auto'.",
            param="x-gearshift-route",
            code="invalid_value",
        )
    if route == "pin":
        if ceiling is None:
            raise BadRequest(
                f"Cannot pin {name!r}: pinning needs a concrete model.",
                param="model",
                code="invalid_value",
            )
        return _single(request, policy, ceiling, "pinned")
    if not config.routing.classifier and hinted is None:
        # Without the classifier and without a hint there is nothing to route on.
        target = ceiling or _default_model(config)
        return _single(request, policy, target, "default-model", ceiling or policy.baseline)
    if not config.offered:
        raise NoTarget(
            "No model is offered: no provider has an API key configured.", code="no_model_available"
        )

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
    # The room the answer may take: what the request allows, else the typical answer.
    requested_out = _requested_output(request.body)
    room = requested_out or tokens_out
    if tokens_in * 1.25 + room > policy.smallest_window:
        # Near some model's context window the estimate is not good enough: count.
        tokens_in = tokens.count_request(request.body)
    needs = _needs(request.body, request.stream, decision.image)
    candidates = policy.candidates(need_rank, top, needs, tokens_in, room, requested_out)
    effort_ceiling = reasoning.client_effort(request.body)
    if effort_ceiling is not None:  # the client's effort is a ceiling: no variant above it
        candidates = [m for m in candidates if reasoning.within(m, effort_ceiling)]
    if not candidates and ceiling is not None:
        candidates = [ceiling]
    if not candidates:
        raise NoTarget(
            f"No offered model meets tier {policy.tiers[need_rank]!r}"
            + (f" with {', '.join(sorted(needs))}" if needs else "")
            + f" for a prompt of about {tokens_in} tokens.",
            code="no_model_available",
        )
    # Cheapest first (estimate_cost's order, without the call per model); ties: higher
    # tier, then the model at its default effort before a variant, then catalog order (a
    # stable sort's). Keys as tuples of numbers: compared in C, no call per model.
    keyed = [
        (
            m.spec.price_in * tokens_in + m.spec.price_out * tokens_out * m.output_factor,
            -m.tier_rank,
            m.effort is not None,
            i,
        )
        for i, m in enumerate(candidates)
    ]
    keyed.sort()
    candidates = [candidates[k[3]] for k in keyed]
    reasons = ",".join(decision.reasons) or "classifier"
    sticky = "new"
    if prefer is not None:
        sticky = "moved"
        for i, model in enumerate(candidates):
            if model.label == prefer:
                candidates.insert(0, candidates.pop(i))
                sticky, reasons = "hit", f"{reasons},sticky"
                break
    baseline = ceiling or policy.baseline or candidates[-1]
    below: list[Model] = []
    if config.reliability.degrade and need_rank > 0:
        below = policy.candidates(0, need_rank - 1, needs, tokens_in, room, requested_out)
        below = [m for m in below if reasoning.within(m, effort_ceiling)]
        below.sort(
            key=lambda m: (
                -m.tier_rank,
                m.spec.price_in * tokens_in + m.spec.price_out * tokens_out * m.output_factor,
            )
        )
    return Plan(
        requested=name,
        tier=policy.tiers[need_rank],
        targets=candidates,
        reason=reasons,
        decision=decision,
        est_cost_usd=estimate_cost(candidates[0], tokens_in, tokens_out),
        baseline_cost_usd=estimate_cost(baseline, tokens_in, tokens_out),
        prompt_tokens=tokens_in,
        output_tokens=tokens_out,
        below=below,
        baseline=baseline,
        sticky=sticky,
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
    return min(
        (m for m in config.offered if m.effort is None),
        key=lambda m: m.spec.price_in + m.spec.price_out,
    )


def _single(
    request: ChatRequest, policy: Policy, model: Model, reason: str, baseline: Model | None = None
) -> Plan:
    """A plan of one model; the baseline is that model unless given."""
    tokens_in = _prompt_chars(request.body)
    tokens_out = _expected_output(request.body, policy.config)
    baseline = baseline or model
    return Plan(
        requested=request.model,
        tier=model.tier,
        targets=[model],
        reason=reason,
        output_tokens=tokens_out,
        est_cost_usd=estimate_cost(model, tokens_in, tokens_out),
        baseline_cost_usd=estimate_cost(baseline, tokens_in, tokens_out),
        prompt_tokens=tokens_in,
        baseline=baseline,
    )


def _prompt_chars(body: Mapping[str, Any]) -> int:
    messages = body.get("messages", [])
    return tokens.estimate_chars(
        sum(len(content_text(m.get("content"))[0]) for m in messages if isinstance(m, dict))
    )


def _requested_output(body: Mapping[str, Any]) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    return limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else 0


def _expected_output(body: Mapping[str, Any], config: Config) -> int:
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    default = config.routing.expected_output_tokens
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return min(limit, default)
    return default
