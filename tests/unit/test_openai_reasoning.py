"""OpenAI Chat Completions to a reasoning model (an OpenAI-compatible server, or an OpenAI
model on the chat API): the effort chosen as ``reasoning_effort``, ``max_tokens`` under the
name reasoning models take, and tool-call ids that carry other providers' reasoning state
sent plain."""

from __future__ import annotations

from typing import Any

import orjson

from gearshift.config import Model, decode, resolve
from gearshift.inbound.chat import parse_chat
from gearshift.providers import carry, openai

CATALOG = """
use_default_catalog = false
[[providers]]
name = "a"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "k"
[[models]]
name = "thinker"
provider = "a"
upstream_id = "thinker-1"
tier = "standard"
price_in = 1
price_out = 4
[models.reasoning]
efforts = ["low", "medium", "high"]
default = "medium"
variants = { high = { tier = "frontier", output_factor = 2.0 } }
[[models]]
name = "plain"
provider = "a"
tier = "light"
price_in = 0.1
price_out = 0.4
"""
CONFIG = resolve(decode(CATALOG.encode(), source="t"), source="t", environ={})
OFFERED = {m.label: m for m in CONFIG.offered}


def _sent(model: Model, **body: Any) -> dict[str, Any]:
    request = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], **body}
    out = openai.encode_request(parse_chat(orjson.dumps(request)), model)
    sent: dict[str, Any] = orjson.loads(out.body)
    return sent


def test_no_effort_asked_sends_none_and_max_tokens_is_renamed() -> None:
    sent = _sent(OFFERED["thinker"], max_tokens=300)
    assert "reasoning_effort" not in sent
    assert "max_tokens" not in sent
    assert sent["max_completion_tokens"] == 300


def test_the_clients_effort_is_clamped_to_what_the_model_accepts() -> None:
    assert _sent(OFFERED["thinker"], reasoning_effort="none")["reasoning_effort"] == "low"
    assert _sent(OFFERED["thinker"], reasoning_effort="max")["reasoning_effort"] == "high"


def test_a_variant_sends_its_effort_below_the_clients_ceiling() -> None:
    assert _sent(OFFERED["thinker[high]"])["reasoning_effort"] == "high"
    assert _sent(OFFERED["thinker[high]"], reasoning_effort="low")["reasoning_effort"] == "low"


def test_a_model_without_reasoning_gets_the_body_as_sent() -> None:
    sent = _sent(OFFERED["plain"], max_tokens=300, reasoning_effort="high")
    assert sent["max_tokens"] == 300
    assert sent["reasoning_effort"] == "high"
    assert "max_completion_tokens" not in sent


def test_carried_reasoning_state_never_reaches_an_openai_upstream() -> None:
    wrapped = carry.wrap("toolu_01", "claude-sonnet-5-5", {"a": [{"type": "thinking"}]})
    assert carry.unwrap(wrapped)[0] == "toolu_01"
    messages = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": wrapped, "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": wrapped, "content": "sunny"},
    ]
    raw = orjson.dumps({"model": "auto", "messages": messages})
    request = parse_chat(raw)
    assert request.carried
    sent = orjson.loads(openai.encode_request(request, OFFERED["plain"]).body)
    assert sent["messages"][1]["tool_calls"][0]["id"] == "toolu_01"
    assert sent["messages"][2]["tool_call_id"] == "toolu_01"
    assert carry.MARK not in orjson.dumps(sent).decode()


def test_a_state_that_is_not_ours_is_ignored_not_an_error() -> None:
    assert carry.unwrap("call_1.gs1.!!not-base64!!") == ("call_1", None)
    assert carry.unwrap("call_1.gs1.eJwLycgsVgCi4vzcVAAZHQQR") == ("call_1", None)
    assert carry.unwrap("call_1") == ("call_1", None)
    # A state that inflates past the bound is dropped, not inflated.
    import base64
    import zlib

    bomb = base64.urlsafe_b64encode(zlib.compress(b"[" + b" " * (2 << 20) + b"]")).decode()
    assert carry.unwrap("c" + carry.MARK + bomb) == ("c", None)


def test_carried_state_is_bounded_per_request_not_only_per_id() -> None:
    """A client picks its tool-call ids: a few hundred small ids that each inflate to the
    per-id bound must not become a body of hundreds of MB for the upstream."""
    import base64
    import zlib

    blob = zlib.compress(orjson.dumps({"m": "", "a": [{"type": "thinking", "x": " " * 200_000}]}))
    wrapped = "toolu_1" + carry.MARK + base64.urlsafe_b64encode(blob).decode().rstrip("=")
    assert carry.unwrap(wrapped)[1] is not None  # one is within the per-id bound
    budget = carry.Budget()
    kept = sum(carry.unwrap(wrapped, budget)[1] is not None for _ in range(200))
    assert 10 <= kept <= 21  # 4 MiB of state in all, then ignored
    assert budget.left <= 0


def test_anthropic_upstream_body_stays_small_under_a_carry_bomb() -> None:
    import base64
    import zlib

    from gearshift.config import load
    from gearshift.providers import anthropic

    blob = zlib.compress(
        orjson.dumps(
            {"m": "", "a": [{"type": "thinking", "thinking": " " * 250_000, "signature": "s"}]}
        )
    )
    calls = [
        {
            "id": f"t{i}" + carry.MARK + base64.urlsafe_b64encode(blob).decode().rstrip("="),
            "type": "function",
            "function": {"name": "f", "arguments": "{}"},
        }
        for i in range(200)
    ]
    messages = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        *({"role": "tool", "tool_call_id": c["id"], "content": "ok"} for c in calls),
    ]
    raw = orjson.dumps({"model": "auto", "max_tokens": 64, "messages": messages})
    assert len(raw) < 2_000_000
    model = load(None, environ={"ANTHROPIC_API_KEY": "k"}).models["claude-haiku-5-5"]
    out = anthropic.encode_request(parse_chat(raw), model)
    assert len(out.body) < 8_000_000  # was 200 x 250 KB = 50 MB before the budget
