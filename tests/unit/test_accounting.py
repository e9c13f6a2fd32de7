"""Cost arithmetic from each provider's usage shape, against hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from gearshift.config import catalog_2024, load
from gearshift.inbound.chat import parse_chat
from gearshift.providers import REGISTRY
from gearshift.serve.accounting import Tokens, account, answer_tokens, cost

KEYS = {"OPENAI_API_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-b", "GEMINI_API_KEY": "AIza-c"}
CONFIG = load(None, environ=KEYS, base=catalog_2024())
GOLDEN = Path(__file__).parents[1] / "golden"
M = CONFIG.models


def _usage(kind: str, case: str, model: str) -> Tokens:
    """The usage the adapter decodes from a recorded upstream answer."""
    folder = GOLDEN / kind / case
    request = parse_chat((folder / "client_request.json").read_bytes())
    body = (folder / "upstream_response.json").read_bytes()
    completion = REGISTRY[kind].decode_response(body, request, M[model])
    tokens = Tokens.from_usage(completion.usage)
    assert tokens is not None
    return tokens


def test_openai_cached_and_reasoning_tokens() -> None:
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 100},
    }
    t = Tokens.from_usage(usage)
    assert t == Tokens(1000, 300, cached=400, reasoning=100)
    # 600 fresh x 2.50 + 400 cached x 1.25 + 200 visible x 10 + 100 reasoning x 10, per 1M
    assert cost(M["gpt-4o"], t) == pytest.approx(0.005)


def test_anthropic_cache_reads_and_writes() -> None:
    t = _usage("anthropic", "usage_cache", "claude-3-haiku")
    assert (t.prompt, t.cached, t.cache_write, t.completion) == (4050, 3000, 1000, 20)
    # 50 fresh x 0.25 + 3000 read x 0.03 + 1000 written x 0.30 + 20 out x 1.25, per 1M
    assert cost(M["claude-3-haiku"], t) == pytest.approx(427.5e-6)


def test_anthropic_thinking_is_output_priced_as_reasoning() -> None:
    t = _usage("anthropic", "usage_thinking", "claude-3-haiku")
    assert (t.prompt, t.completion, t.reasoning) == (20, 60, 55)
    # thinking within output_tokens, at price_out (no reasoning price in the catalog):
    # 20 x 0.25 + 60 x 1.25, per 1M
    assert cost(M["claude-3-haiku"], t) == pytest.approx(80e-6)


def test_gemini_thinking_and_cached_content() -> None:
    t = _usage("gemini", "usage_thinking_cached", "gemini-1.5-flash")
    assert (t.prompt, t.cached, t.completion, t.reasoning) == (1200, 1000, 45, 40)
    # no cached or reasoning price in the catalog: 1200 x 0.075 + 45 x 0.30, per 1M
    assert cost(M["gemini-1.5-flash"], t) == pytest.approx(103.5e-6)
    # the same tokens on gpt-4o (cached at its 1.25): 200 x 2.5 + 1000 x 1.25 + 45 x 10
    a = account(M["gemini-1.5-flash"], M["gpt-4o"], t)
    assert a.baseline_usd == pytest.approx(2200e-6)
    assert a.savings_usd == pytest.approx(2200e-6 - 103.5e-6)
    summary = a.summary("light", 1)
    assert summary["model"] == "gemini-1.5-flash"
    assert summary["baseline_model"] == "gpt-4o"
    assert summary["estimated"] is False


@pytest.mark.parametrize(
    "usage",
    [
        None,
        {},
        {"prompt_tokens": 3},
        {"prompt_tokens": -1, "completion_tokens": 2},
        {"prompt_tokens": True, "completion_tokens": 2},
        {"prompt_tokens": "3", "completion_tokens": 2},
    ],
)
def test_unusable_usage_is_none(usage: object) -> None:
    assert Tokens.from_usage(usage) is None  # type: ignore[arg-type]


def test_counts_that_do_not_add_up_are_clamped() -> None:
    t = Tokens(10, 5, cached=50, cache_write=50, reasoning=9)
    # all 10 prompt tokens are cache reads, all 5 completion tokens reasoning
    assert cost(M["gpt-4o"], t) == pytest.approx((10 * 1.25 + 5 * 10) / 1e6)


def test_estimates_without_usage() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}]}
    t = Tokens.estimate(body, answer_tokens(b'{"choices":[{"message":{"content":"hi you"}}]}'))
    assert t.estimated
    assert t.prompt > 0
    assert t.completion == 2
    assert answer_tokens(b"not json") == 0
