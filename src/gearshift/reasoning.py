"""Reasoning effort: which effort a request runs at, and how each wire format says it.

gearshift speaks OpenAI's scale (``none`` < ``minimal`` < ``low`` < ``medium`` < ``high`` <
``xhigh`` < ``max``). The effort sent to a model is the one its plan entry chose (an effort
variant, ``ReasoningSpec.variants``) and the client's own ``reasoning_effort`` — a ceiling,
like a requested model: the lower of the two — clamped to the efforts the model accepts
(the highest accepted at or below it, else the lowest accepted). Nothing is sent when
neither asks for one: the provider's default runs.

No provider defines an equivalence between these scales; the tables below are gearshift's
convention, from ``docs/wire-formats.md`` §7.4 (the Gemini 2.5 budgets follow Google's own
OpenAI-compatibility mapping). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gearshift.config import EFFORT_RANK, EFFORTS, Model

# Anthropic models with a manual thinking budget (Haiku 4.5 and older): budget_tokens per
# effort (at least 1,024); ``none`` sends no thinking.
ANTHROPIC_BUDGET: Mapping[str, int] = {
    "minimal": 1024,
    "low": 2048,
    "medium": 8192,
    "high": 16384,
    "xhigh": 32000,
    "max": 64000,
}
# Gemini 2.5 thinkingBudget per effort (-1: dynamic).
GEMINI_BUDGET: Mapping[str, int] = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": -1,
}


def client_effort(body: Mapping[str, Any]) -> str | None:
    """The client's ``reasoning_effort`` when it is one gearshift knows (the parse refuses
    any other), else None."""
    value = body.get("reasoning_effort")
    return value if isinstance(value, str) and value in EFFORT_RANK else None


def clamp(effort: str, accepted: list[str]) -> str:
    """``effort`` if ``accepted`` has it, else the highest accepted below it, else the lowest
    accepted (a model that cannot think less than ``low`` runs at ``low``)."""
    if effort in accepted or not accepted:
        return effort
    rank = EFFORT_RANK[effort]
    below = [e for e in accepted if EFFORT_RANK[e] < rank]
    if below:
        return max(below, key=EFFORT_RANK.__getitem__)
    return min(accepted, key=EFFORT_RANK.__getitem__)


def effort_for(body: Mapping[str, Any], model: Model) -> str | None:
    """The effort to send ``model`` for a request with ``body``, or None to send none.

    For a model without a reasoning spec: the client's value unchanged (an OpenAI-compatible
    server may know it; the Anthropic and Gemini adapters drop it).
    """
    client = client_effort(body)
    reasoning = model.spec.reasoning
    if reasoning is None:
        return client
    wanted = model.effort
    if wanted is None and client is None:
        return None
    if wanted is None or (client is not None and EFFORT_RANK[client] < EFFORT_RANK[wanted]):
        wanted = client
    assert wanted is not None
    return clamp(wanted, list(reasoning.efforts))


def within(model: Model, ceiling: str | None) -> bool:
    """Whether ``model`` (a variant, or a model at its default) stays within the client's
    effort ``ceiling``: a variant above it is not a candidate."""
    return (
        ceiling is None or model.effort is None or EFFORT_RANK[model.effort] <= EFFORT_RANK[ceiling]
    )


def control(model: Model) -> str:
    """How ``model``'s effort is sent: its spec's ``control``, else its wire format's usual
    one (Gemini: ``level``; OpenAI and Anthropic: ``effort``)."""
    reasoning = model.spec.reasoning
    if reasoning is not None and reasoning.control is not None:
        return reasoning.control
    return "level" if model.provider.kind == "gemini" else "effort"


__all__ = [
    "ANTHROPIC_BUDGET",
    "EFFORTS",
    "GEMINI_BUDGET",
    "clamp",
    "client_effort",
    "control",
    "effort_for",
    "within",
]
