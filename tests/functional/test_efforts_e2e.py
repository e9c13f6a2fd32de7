"""Efforts end to end, on the default catalog with every provider on the mock: the planner
picks an effort variant when it is the cheapest way to meet the tier, the client's
``reasoning_effort`` is a ceiling, and the answer says the effort it ran at."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from upstreams import state

from gearshift.config import load
from gearshift.providers import REGISTRY
from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
MESSAGES = [{"role": "user", "content": "Say something about the weather in three words."}]


async def _gateway(aiohttp_client: ClientFactory, mock: TestServer) -> TestClient:
    base = str(mock.make_url(""))
    env = {
        "OPENAI_API_KEY": "sk-efforts-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-efforts-0123456789",
        "GEMINI_API_KEY": "g-efforts-0123456789",
        "GEARSHIFT_OPENAI_BASE_URL": base + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": base + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": base + "/v1beta",
    }
    return await aiohttp_client(create_app(load(None, environ=env, kinds=REGISTRY.keys())))


async def _ask(client: TestClient, tier: str, **body: Any) -> Any:
    resp = await client.post(
        "/v1/chat/completions",
        json={"model": "auto", "messages": MESSAGES, **body},
        headers={"x-gearshift-tier": tier},
    )
    assert resp.status == 200, await resp.text()
    await resp.read()
    return resp


async def test_frontier_work_goes_to_the_mid_size_model_at_max_effort(
    aiohttp_client: ClientFactory, mock_upstream: TestServer
) -> None:
    client = await _gateway(aiohttp_client, mock_upstream)
    resp = await _ask(client, "frontier")
    assert resp.headers["x-gearshift-model"] == "claude-sonnet-5-5"
    assert resp.headers["x-gearshift-tier"] == "frontier"
    assert resp.headers["x-gearshift-effort"] == "max"
    (sent,) = state(mock_upstream).requests
    assert sent.api == "anthropic"
    assert sent.body["model"] == "claude-sonnet-5-5"
    assert sent.body["output_config"]["effort"] == "max"


async def test_the_clients_effort_is_a_ceiling_and_is_what_runs(
    aiohttp_client: ClientFactory, mock_upstream: TestServer
) -> None:
    client = await _gateway(aiohttp_client, mock_upstream)
    resp = await _ask(client, "frontier", reasoning_effort="low", stream=True)
    # No variant above low: the frontier tier's own cheapest model, sent low.
    assert resp.headers["x-gearshift-model"] == "claude-opus-5-5"
    assert resp.headers["x-gearshift-effort"] == "low"
    (sent,) = state(mock_upstream).requests
    assert sent.body["output_config"]["effort"] == "low"


async def test_nothing_asked_runs_the_models_default_and_says_so(
    aiohttp_client: ClientFactory, mock_upstream: TestServer
) -> None:
    client = await _gateway(aiohttp_client, mock_upstream)
    resp = await _ask(client, "standard")
    assert resp.headers["x-gearshift-model"] == "gemini-3.8-flash"
    assert resp.headers["x-gearshift-effort"] == "default"
    (sent,) = state(mock_upstream).requests
    assert "thinkingConfig" not in sent.body.get("generationConfig", {})


async def test_a_refused_sampling_parameter_is_dropped_and_named(
    aiohttp_client: ClientFactory, mock_upstream: TestServer
) -> None:
    client = await _gateway(aiohttp_client, mock_upstream)
    resp = await _ask(client, "light", temperature=0.2, reasoning_effort="none")
    assert resp.headers["x-gearshift-model"] == "gpt-6-luna"
    assert resp.headers["x-gearshift-dropped-params"] == "temperature"
    assert resp.headers["x-gearshift-effort"] == "none"
    (sent,) = state(mock_upstream).requests
    assert sent.path == "/v1/responses"
    assert "temperature" not in sent.body
    assert sent.body["reasoning"] == {"effort": "none"}
