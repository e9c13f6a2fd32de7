"""Gemini reasoning: ``thinkingConfig`` from the effort, and thought signatures carried through
the client in tool-call ids (``providers.carry``).

The golden cases ``tests/golden/gemini/reasoning_*`` hold most of it; ``test_golden.py`` checks
their requests and plain answers. An answer whose ids carry a signature cannot be compared
literally there (the carried part is a compressed blob, the plain part may be synthesized):
those cases keep it in ``carried_*`` files, checked here, where a carried id is written as
``{"carried": <plain id>, "state": <state>}`` (the plain id normalised as ``test_golden``
does: ``call_<synth-N>``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import fed
from test_golden import MODELS, Normaliser, assert_same, sse_items

from gearshift import reasoning, sse
from gearshift.config import EFFORTS, decode, resolve
from gearshift.inbound.chat import parse_chat
from gearshift.providers import carry, gemini
from gearshift.serve.accounting import Tokens, cost

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "gemini"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]


def _readable(value: Any) -> Any:
    """``value`` with every carried id as ``{"carried": plain, "state": state}``."""
    if isinstance(value, dict):
        return {k: _readable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_readable(v) for v in value]
    if isinstance(value, str) and carry.MARK in value:
        plain, state = carry.unwrap(value)
        assert state is not None, f"unreadable carried id {value!r}"
        return {"carried": plain, "state": state}
    return value


def _load(case: str, name: str) -> Any:
    return orjson.loads((GOLDEN / case / name).read_bytes())


def _request(case: str) -> Any:
    return parse_chat((GOLDEN / case / "client_request.json").read_bytes())


def _model(case: str) -> Any:
    return MODELS[_load(case, "upstream.json")["model"]]


def test_signed_answer_carries_the_signature_in_the_first_call_id() -> None:
    case = "reasoning_signed_answer"
    body = (GOLDEN / case / "carried_upstream_response.json").read_bytes()
    completion = gemini.decode_response(body, _request(case), _model(case))
    normalise = Normaliser()
    actual = normalise(_readable(orjson.loads(completion.body)))
    expected = Normaliser()(_load(case, "carried_client_response.json"))
    assert_same(actual, expected, "client response")


def test_signed_stream_carries_each_signature_in_its_call_id() -> None:
    case = "reasoning_signed_stream"
    decoder = gemini.stream_decoder(_request(case), _model(case))
    framer = sse.Framer()
    out = b""
    for event in framer.feed((GOLDEN / case / "carried_upstream_stream.sse").read_bytes()):
        out += fed(decoder, event)
    out += fed(decoder, None)
    assert decoder.state.error is None
    assert decoder.state.finished
    actual = Normaliser()(_readable(sse_items(out)))
    expected = Normaliser()(sse_items((GOLDEN / case / "carried_client_stream.sse").read_bytes()))
    assert_same(actual, expected, "client stream")


def _next_turn(answer: bytes, target: str) -> dict[str, Any]:
    """The Gemini body for the client's next turn: the assistant message of ``answer`` as
    the client sends it back, and its tool results, sent to model ``target``."""
    message = orjson.loads(answer)["choices"][0]["message"]
    results = [
        {"role": "tool", "tool_call_id": call["id"], "content": "ok"}
        for call in message["tool_calls"]
    ]
    messages = [{"role": "user", "content": "Weather?"}, message, *results]
    body = {"model": target, "tools": TOOLS, "messages": messages}
    request = parse_chat(orjson.dumps(body))
    assert request.carried
    return orjson.loads(gemini.encode_request(request, MODELS[target]).body)


def _signed_answer(model: str, signature: str) -> bytes:
    call = {"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": signature}
    upstream = {"candidates": [{"content": {"role": "model", "parts": [call]}, "index": 0}]}
    request = parse_chat(
        orjson.dumps({"model": model, "messages": [{"role": "user", "content": "x"}]})
    )
    return gemini.decode_response(orjson.dumps(upstream), request, MODELS[model]).body


def test_a_signature_goes_back_to_the_model_that_made_it_and_no_other() -> None:
    answer = _signed_answer("gemini-4-carbon", "c2lnbmF0dXJl/+==")
    same = _next_turn(answer, "gemini-4-carbon")["contents"][1]["parts"][0]
    assert same["thoughtSignature"] == "c2lnbmF0dXJl/+=="
    other = _next_turn(answer, "gemini-3.8-flash")["contents"][1]["parts"][0]
    assert other["thoughtSignature"] == gemini.SKIP_SIGNATURE
    legacy = _next_turn(answer, "gemini-1.5-flash")["contents"][1]["parts"][0]
    assert "thoughtSignature" not in legacy, "no placeholder for a model without reasoning"


def test_an_unreadable_carried_state_is_no_signature_and_no_error() -> None:
    body = {
        "model": "gemini-4-carbon",
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1.gs1.not-zlib",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1.gs1.not-zlib", "content": "ok"},
        ],
    }
    out = orjson.loads(
        gemini.encode_request(parse_chat(orjson.dumps(body)), MODELS["gemini-4-carbon"]).body
    )
    contents = out["contents"]
    assert contents[1]["parts"][0]["thoughtSignature"] == gemini.SKIP_SIGNATURE
    assert "functionResponse" in contents[2]["parts"][0], "the pair still matches"


def test_reasoning_usage_is_priced_as_output() -> None:
    case = "reasoning_usage"
    body = (GOLDEN / case / "upstream_response.json").read_bytes()
    model = MODELS["gemini-4-carbon"]
    tokens = Tokens.from_usage(gemini.decode_response(body, _request(case), model).usage)
    assert tokens == Tokens(100, 520, reasoning=500)
    # 100 in x 4.00 + (20 answer + 500 thoughts) out x 20.00, per 1M
    assert cost(model, tokens) == pytest.approx(0.0108)


_BUDGET_TOML = b"""
use_default_catalog = false
[[providers]]
name = "g"
kind = "gemini"
api_key = "env:K"
base_url = "https://generativelanguage.googleapis.com/v1beta"
[[models]]
name = "flash-25"
provider = "g"
upstream_id = "gemini-2.5-flash"
tier = "light"
price_in = 0.3
price_out = 2.5
reasoning = { efforts = ["none", "low", "medium", "high", "max"], control = "budget" }
"""


def _budget_model() -> Any:
    raw = decode(_BUDGET_TOML, source="budget.toml")
    return resolve(raw, source="budget.toml", environ={"K": "k"}).models["flash-25"]


@pytest.mark.parametrize(
    ("effort", "budget"),
    # wire-formats.md §7.4, Gemini 2.5 column; minimal/xhigh clamped to the efforts listed
    [
        ("none", 0),
        ("minimal", 0),
        ("low", 1024),
        ("medium", 8192),
        ("high", 24576),
        ("xhigh", 24576),
        ("max", -1),
    ],
)
def test_budget_control_sends_thinking_budget(effort: str, budget: int) -> None:
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": effort,
    }
    out = orjson.loads(gemini.encode_request(parse_chat(orjson.dumps(body)), _budget_model()).body)
    assert out["generationConfig"] == {"thinkingConfig": {"thinkingBudget": budget}}


def test_budget_control_without_effort_sends_nothing() -> None:
    body = {"model": "auto", "messages": [{"role": "user", "content": "x"}]}
    out = orjson.loads(gemini.encode_request(parse_chat(orjson.dumps(body)), _budget_model()).body)
    assert "generationConfig" not in out


@pytest.mark.parametrize("name", ["gemini-4-carbon", "gemini-4-hydrogen", "gemini-3.8-flash"])
@pytest.mark.parametrize("effort", EFFORTS)
def test_every_effort_becomes_a_level_the_model_accepts(name: str, effort: str) -> None:
    model = MODELS[name]
    assert model.spec.reasoning is not None
    body = {
        "model": "auto",
        "messages": [{"role": "user", "content": "x"}],
        "reasoning_effort": effort,
    }
    out = orjson.loads(gemini.encode_request(parse_chat(orjson.dumps(body)), model).body)
    (config,) = out["generationConfig"].values()
    assert set(config) == {"thinkingLevel"}
    assert config["thinkingLevel"] in model.spec.reasoning.efforts
    assert reasoning.control(model) == "level"
