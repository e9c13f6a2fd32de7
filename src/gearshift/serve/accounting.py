"""What a request cost, what it would have cost without routing, and the difference.

Usage arrives normalised to OpenAI's shape by the adapters (``prompt_tokens`` counts every
input token, cache reads and writes included; ``completion_tokens`` counts reasoning tokens
too). Each kind is priced at the model's catalog price for it, where the catalog has one:

    fresh input   (prompt - cached - cache writes) * price_in
    cache reads   cached * price_cached_in          (default price_in)
    cache writes  cache_write * price_cache_write_in (default price_in)
    visible out   (completion - reasoning) * price_out
    reasoning     reasoning * price_reasoning_out    (default price_out)

The baseline is the same tokens on the model the client asked for (for ``auto`` and tier
aliases: ``routing.baseline_model``, by default the most capable offered model); savings are
baseline - cost. When the upstream reports no usage the counts are estimated (the prompt
with tiktoken, the answer from its text or its number of stream events) and marked so.
Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from gearshift.config import Model
from gearshift.routing import tokens


@dataclass(frozen=True, slots=True)
class Tokens:
    prompt: int  # every input token: cache reads and writes included
    completion: int  # every output token: reasoning included
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0
    estimated: bool = False

    KINDS = ("prompt", "cached", "cache_write", "completion", "reasoning")

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any] | None) -> Tokens | None:
        """The counts in an OpenAI usage object; None when it has none usable."""
        if not usage:
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        if isinstance(prompt, bool) or prompt < 0 or isinstance(completion, bool) or completion < 0:
            return None
        details = usage.get("prompt_tokens_details") or {}
        out_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt,
            completion,
            cached=_int(details.get("cached_tokens")),
            cache_write=_int(details.get("cache_write_tokens")),
            reasoning=_int(out_details.get("reasoning_tokens")),
        )

    @classmethod
    def estimate(cls, body: Mapping[str, Any], completion: int) -> Tokens:
        return cls(tokens.count_request(body), completion, estimated=True)

    def by_kind(self) -> tuple[tuple[str, int], ...]:
        return (
            ("prompt", self.prompt),
            ("cached", self.cached),
            ("cache_write", self.cache_write),
            ("completion", self.completion),
            ("reasoning", self.reasoning),
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def cost(model: Model, t: Tokens) -> float:
    """USD for ``t`` on ``model``, each token kind at its catalog price."""
    s = model.spec
    cached = min(t.cached, t.prompt)
    written = min(t.cache_write, t.prompt - cached)
    reasoning = min(t.reasoning, t.completion)
    price_cached = s.price_in if s.price_cached_in is None else s.price_cached_in
    price_written = s.price_in if s.price_cache_write_in is None else s.price_cache_write_in
    price_reasoning = s.price_out if s.price_reasoning_out is None else s.price_reasoning_out
    return (
        (t.prompt - cached - written) * s.price_in
        + cached * price_cached
        + written * price_written
        + (t.completion - reasoning) * s.price_out
        + reasoning * price_reasoning
    ) / 1e6


@dataclass(frozen=True, slots=True)
class Account:
    """One answered request's money: on the model that served it, and on the baseline."""

    model: Model
    baseline: Model
    tokens: Tokens
    cost_usd: float
    baseline_usd: float

    @property
    def savings_usd(self) -> float:
        return self.baseline_usd - self.cost_usd

    def summary(self, tier: str, attempts: int) -> dict[str, Any]:
        """The ``gearshift`` object of a stream's usage chunk (extra fields the SDK keeps)."""
        return {
            "cost_usd": round(self.cost_usd, 10),
            "baseline_usd": round(self.baseline_usd, 10),
            "savings_usd": round(self.savings_usd, 10),
            "model": self.model.name,
            "baseline_model": self.baseline.name,
            "tier": tier,
            "attempts": attempts,
            "estimated": self.tokens.estimated,
        }


def account(model: Model, baseline: Model, t: Tokens) -> Account:
    return Account(model, baseline, t, cost(model, t), cost(baseline, t))


def answer_tokens(body: bytes) -> int:
    """Estimated completion tokens of a non-streaming OpenAI answer without usage."""
    try:
        doc = orjson.loads(body)
        text = "".join(
            str((choice.get("message") or {}).get("content") or "")
            + str((choice.get("message") or {}).get("tool_calls") or "")
            for choice in doc.get("choices", [])
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return 0
    return tokens.count(text)


__all__ = ["Account", "Tokens", "account", "answer_tokens", "cost"]
