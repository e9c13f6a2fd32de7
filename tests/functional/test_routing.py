"""Routing through a running gearshift: easy work shifts down, hard work stays."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gearshift.mock import MockState

EASY = "Classify the sentiment of this review as positive or negative: 'Love it, works great.'"
HARD = (
    "Prove that for every integer n > 1 the harmonic sum 1 + 1/2 + ... + 1/n is never an integer."
)


async def _post(
    gateway: TestClient, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    return await gateway.post("/v1/chat/completions", json=body, headers=headers or {})


async def test_a_simple_request_for_gpt4o_is_served_by_gpt4o_mini(
    gateway: TestClient, mock_state: MockState
) -> None:
    resp = await _post(
        gateway, {"model": "gpt-4o", "messages": [{"role": "user", "content": EASY}]}
    )
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "gpt-4o-mini"
    assert resp.headers["x-gearshift-tier"] == "light"
    assert 0 <= float(resp.headers["x-gearshift-score"]) < 0.5
    assert 0 <= float(resp.headers["x-gearshift-risk"]) <= 1
    assert resp.headers["x-gearshift-reason"]
    assert float(resp.headers["x-gearshift-est-cost-usd"]) < float(
        resp.headers["x-gearshift-requested-cost-usd"]
    )
    assert mock_state.requests[-1].body["model"] == "gpt-4o-mini"
    assert (await resp.json())["choices"][0]["message"]["content"].startswith(
        "Mock answer from gpt-4o-mini"
    )


async def test_a_hard_request_stays_on_gpt4o(gateway: TestClient, mock_state: MockState) -> None:
    for stream in (False, True):
        resp = await _post(
            gateway,
            {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": HARD}]},
        )
        assert resp.status == 200
        assert resp.headers["x-gearshift-model"] == "gpt-4o"
        assert resp.headers["x-gearshift-tier"] == "frontier"
        await resp.read()
        assert mock_state.requests[-1].body["model"] == "gpt-4o"


async def test_hints_from_the_sdk_shapes(gateway: TestClient, mock_state: MockState) -> None:
    easy = [{"role": "user", "content": EASY}]
    resp = await _post(
        gateway, {"model": "auto", "messages": easy}, {"x-gearshift-tier": "frontier"}
    )
    assert resp.headers["x-gearshift-model"] == "gpt-4o"
    assert resp.headers["x-gearshift-score"] == "hint"
    assert resp.headers["x-gearshift-risk"] == "hint"
    resp = await _post(
        gateway, {"model": "auto", "messages": easy, "gearshift": {"tier": "frontier"}}
    )
    assert resp.headers["x-gearshift-model"] == "gpt-4o"
    assert "gearshift" not in mock_state.requests[-1].body, "the hint object is stripped"
    resp = await _post(gateway, {"model": "gearshift/frontier", "messages": easy})
    assert resp.headers["x-gearshift-model"] == "gpt-4o"
    resp = await _post(gateway, {"model": "gpt-4o", "messages": easy}, {"x-gearshift-route": "pin"})
    assert resp.headers["x-gearshift-model"] == "gpt-4o"
    resp = await _post(gateway, {"model": "auto", "messages": easy}, {"x-gearshift-tier": "ultra"})
    assert resp.status == 400
    assert (await resp.json())["error"]["param"] == "x-gearshift-tier"


async def test_a_failing_primary_falls_back_and_headers_tell_who_answered(
    aiohttp_client: Any, make_config: Any, mock_state: MockState
) -> None:
    from gearshift.serve.app import create_app

    toml = (
        "use_default_catalog = false\n"
        "[[providers]]\nname = 'openai'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:9'\n"
        "api_key = 'env:OPENAI_API_KEY'\n"
        "[[models]]\nname = 'cheap-http-500'\nprovider = 'openai'\ntier = 'light'\n"
        "price_in = 0.1\nprice_out = 0.1\n"
        "[[models]]\nname = 'solid'\nprovider = 'openai'\ntier = 'light'\n"
        "price_in = 1\nprice_out = 1\n"
    )
    client = await aiohttp_client(create_app(make_config(toml)))
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": EASY}]},
    )
    assert resp.status == 200
    assert resp.headers["x-gearshift-model"] == "solid"
    assert resp.headers["x-gearshift-attempts"] == "2"
    assert [r.body["model"] for r in mock_state.requests] == ["cheap-http-500", "solid"]
    est = float(resp.headers["x-gearshift-est-cost-usd"])
    assert est > 0
    cheap_cost = float(resp.headers["x-gearshift-requested-cost-usd"])
    assert est != cheap_cost or est > 0
