"""Cost, savings, metrics, stats and the access log, through real requests on loopback."""

from __future__ import annotations

import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from conftest import MakeConfig
from prometheus_client.parser import text_string_to_metric_families
from upstreams import HEADERS, MESSAGES, sse_events, state, two_providers

from gearshift.serve.accounting import Tokens, cost
from gearshift.serve.app import create_app

ClientFactory = Callable[..., Awaitable[TestClient]]
SIMPLE = [{"role": "user", "content": "Translate 'good morning' into Spanish."}]
PROVIDER_KEY = "sk-test-provider-key-0123456789"  # conftest's OPENAI_API_KEY


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(metrics: dict[Any, float], name: str, **labels: str) -> float:
    """The sum over the samples of ``name`` whose labels include ``labels``."""
    return sum(
        v
        for (n, ls), v in metrics.items()
        if n == name and all(dict(ls).get(k) == want for k, want in labels.items())
    )


async def scrape(client: TestClient) -> dict[Any, float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return samples(await resp.text())


async def post(client: TestClient, body: dict[str, Any], **headers: str) -> Any:
    return await client.post("/v1/chat/completions", json=body, headers=headers)


async def test_a_shift_down_costs_the_small_model_and_saves_against_the_requested_one(
    gateway: TestClient, make_config: MakeConfig
) -> None:
    resp = await post(gateway, {"model": "gpt-4o", "messages": SIMPLE})
    assert resp.headers["x-gearshift-model"] == "gpt-4o-mini"
    body = await resp.json()
    t = Tokens.from_usage(body["usage"])
    assert t is not None
    models = make_config().models
    # hand-computed from the answer's own usage: mini at 0.15/0.60, gpt-4o at 2.50/10 per 1M
    expected = (t.prompt * 0.15 + t.completion * 0.60) / 1e6
    baseline = (t.prompt * 2.50 + t.completion * 10.0) / 1e6
    assert float(resp.headers["x-gearshift-cost-usd"]) == pytest.approx(expected, abs=1e-9)
    assert cost(models["gpt-4o-mini"], t) == pytest.approx(expected)
    assert float(resp.headers["x-gearshift-baseline-usd"]) == pytest.approx(baseline, abs=1e-9)
    assert float(resp.headers["x-gearshift-savings-usd"]) == pytest.approx(
        baseline - expected, abs=1e-9
    )


async def test_a_pin_saves_nothing_and_auto_compares_with_the_most_capable_model(
    gateway: TestClient,
) -> None:
    resp = await post(
        gateway, {"model": "gpt-4o", "messages": SIMPLE}, **{"x-gearshift-route": "pin"}
    )
    assert resp.headers["x-gearshift-model"] == "gpt-4o"
    assert resp.headers["x-gearshift-cost-usd"] == resp.headers["x-gearshift-baseline-usd"]
    assert float(resp.headers["x-gearshift-savings-usd"]) == 0
    resp = await post(gateway, {"model": "auto", "messages": SIMPLE})
    t = Tokens.from_usage((await resp.json())["usage"])
    assert t is not None
    # with only the OpenAI key, the most capable offered model is gpt-4o
    baseline = (t.prompt * 2.50 + t.completion * 10.0) / 1e6
    assert float(resp.headers["x-gearshift-baseline-usd"]) == pytest.approx(baseline, abs=1e-9)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_a_stream_carries_its_cost_in_the_usage_chunk(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer, kind: str
) -> None:
    client = await aiohttp_client(create_app(two_providers(primary, backup, kind)))
    body = {
        "model": "auto",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = await sse_events(await post(client, body, **HEADERS))
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    g = usage_chunk["gearshift"]
    t = Tokens.from_usage(usage_chunk["usage"])
    assert t is not None
    # "cheap" costs 0.1/0.1 per 1M; the baseline (most capable offered) "spare" 1/1
    assert g["cost_usd"] == pytest.approx((t.prompt + t.completion) * 0.1 / 1e6)
    assert g["baseline_usd"] == pytest.approx((t.prompt + t.completion) * 1.0 / 1e6)
    assert (g["model"], g["tier"], g["attempts"], g["estimated"]) == ("cheap", "light", 1, False)
    # Without include_usage no usage chunk is sent, but the request is still accounted.
    body.pop("stream_options")
    events = await sse_events(await post(client, body, **HEADERS))
    assert not any(isinstance(e, dict) and "usage" in e and e["usage"] for e in events)
    metrics = await scrape(client)
    assert value(metrics, "gearshift_cost_usd_total", model="cheap") == pytest.approx(
        2 * g["cost_usd"]
    )


async def test_metrics_count_real_requests_streams_and_fallbacks(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    client = await aiohttp_client(create_app(two_providers(primary, backup, "openai")))
    await (await post(client, {"model": "auto", "messages": MESSAGES}, **HEADERS)).read()
    stream = {"model": "auto", "messages": MESSAGES, "stream": True}
    await (await post(client, stream, **HEADERS)).read()
    state(primary).settings.fail = "http-500"
    await (await post(client, stream, **HEADERS)).read()
    await (await post(client, {"model": "nope", "messages": MESSAGES})).read()  # 404
    m = await scrape(client)
    assert value(m, "gearshift_requests_total", model="cheap", status="200") == 2
    assert value(m, "gearshift_requests_total", model="spare", status="200") == 1
    assert value(m, "gearshift_requests_total", requested_model="other", status="404") == 1
    assert value(m, "gearshift_fallbacks_total", reason="unavailable", to="spare") == 1
    assert value(m, "gearshift_fallbacks_total", **{"from": "cheap"}) == 1
    assert value(m, "gearshift_tokens_total", model="cheap", kind="prompt") > 0
    assert value(m, "gearshift_tokens_total", model="spare", kind="completion") > 0
    assert value(m, "gearshift_cost_usd_total", model="spare") > 0
    assert value(m, "gearshift_savings_usd_total", model="cheap") > 0
    assert value(m, "gearshift_overhead_seconds_count") == 4
    assert value(m, "gearshift_decision_seconds_count") == 3  # the 404 never reached it
    assert value(m, "gearshift_upstream_seconds_count", provider="backup") == 1
    assert value(m, "gearshift_ttfb_seconds_count", provider="primary") == 2
    assert value(m, "gearshift_inflight_requests") == 0
    assert value(m, "gearshift_breaker_state", provider="primary", model="cheap") == 0


async def test_breaker_state_is_exported(
    aiohttp_client: ClientFactory, primary: TestServer, backup: TestServer
) -> None:
    extra = "[reliability]\nbreaker = { failures = 1 }"
    client = await aiohttp_client(create_app(two_providers(primary, backup, "openai", extra)))
    state(primary).settings.fail = "http-503"
    await (await post(client, {"model": "auto", "messages": MESSAGES}, **HEADERS)).read()
    m = await scrape(client)
    assert value(m, "gearshift_breaker_state", provider="primary", model="cheap") == 2


async def test_label_values_stay_bounded_under_random_model_names(gateway: TestClient) -> None:
    for i in range(50):
        await (await post(gateway, {"model": f"random-{i}", "messages": MESSAGES})).read()
    m = await scrape(gateway)
    requested = {dict(ls).get("requested_model") for (n, ls) in m if n.startswith("gearshift_")}
    assert requested <= {None, "other"}
    assert value(m, "gearshift_requests_total", requested_model="other") == 50
    assert len(m) < 300  # a fixed set of series, not one per name


async def test_stats_and_status_page(gateway: TestClient) -> None:
    for _ in range(3):
        await (await post(gateway, {"model": "gpt-4o", "messages": SIMPLE})).read()
    await (await post(gateway, {"model": "gpt-4o", "messages": []})).read()  # 400
    resp = await gateway.get("/gearshift/stats")
    s = await resp.json()
    assert (s["requests"], s["answered"], s["errors"]) == (4, 3, 1)
    assert s["models"]["gpt-4o-mini"]["requests"] == 3
    assert s["models"]["gpt-4o-mini"]["share"] == 1.0
    assert s["tiers"]["light"]["requests"] == 3
    assert s["savings_usd"] == pytest.approx(s["baseline_usd"] - s["cost_usd"])
    assert 90 < s["savings_pct"] < 100  # mini costs 6% of gpt-4o
    assert s["breakers"] == {"openai/gpt-4o-mini": "closed"}
    assert s["overhead_ms"]["samples"] == 4
    for path in ("/", "/gearshift"):
        page = await gateway.get(path)
        assert page.headers["content-type"].startswith("text/html")
        text = await page.text()
        assert "gpt-4o-mini" in text
        assert "saved" in text
        assert "<script" not in text
        assert "src=" not in text
        assert "https://" not in text  # no external assets: works offline


async def test_the_access_log_line(
    aiohttp_client: ClientFactory, make_config: MakeConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gearshift.access")
    client = await aiohttp_client(create_app(make_config()))
    leaky = [{"role": "user", "content": f"my key is {PROVIDER_KEY}, classify: ok?"}]
    resp = await post(client, {"model": "gpt-4o", "messages": leaky}, **{"x-request-id": "abc-1"})
    assert resp.headers["x-request-id"] == "abc-1"
    line = orjson.loads(caplog.records[-1].getMessage())
    assert line["request_id"] == "abc-1"
    assert (line["requested_model"], line["model"], line["tier"]) == (
        "gpt-4o",
        "gpt-4o-mini",
        "light",
    )
    assert line["status"] == 200
    assert line["prompt_tokens"] > 0
    assert line["cost_usd"] < line["baseline_usd"]
    assert line["latency_ms"] >= line["overhead_ms"] > 0
    assert line["attempts"] == ["gpt-4o-mini@openai:ok"]
    assert "prompt" not in line  # prompts only when enabled
    assert PROVIDER_KEY not in caplog.text

    client = await aiohttp_client(create_app(make_config("[server]\nlog_prompts = true\n")))
    await (await post(client, {"model": "gpt-4o", "messages": leaky})).read()
    line = orjson.loads(caplog.records[-1].getMessage())
    assert "classify: ok?" in line["prompt"]
    assert "[redacted]" in line["prompt"]
    assert PROVIDER_KEY not in caplog.text


async def test_create_app_writes_the_access_log_in_batches_and_flushes_at_cleanup(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    """The sinks are wired by ``create_app``: given a byte stream (``gearshift serve``
    passes stdout), the lines go there in batches, and the last batch is written when the
    app is cleaned up, not lost."""
    out = io.BytesIO()
    app = create_app(make_config(), access_log=out)
    client = await aiohttp_client(app)
    for n in range(3):
        body = {"model": "gpt-4o", "messages": SIMPLE}
        resp = await post(client, body, **{"x-request-id": f"r{n}"})
        assert resp.status == 200
    await client.close()  # runs the app's cleanup
    lines = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == ["r0", "r1", "r2"]
    assert all(line["status"] == 200 for line in lines)


async def test_overhead_stays_small_while_the_upstream_is_slow(
    gateway: TestClient, mock_state: Any
) -> None:
    mock_state.settings.latency_ms = 150
    for stream in (False, True):
        body = {"model": "gpt-4o", "messages": SIMPLE, "stream": stream}
        await (await post(gateway, body)).read()
    m = await scrape(gateway)
    assert value(m, "gearshift_upstream_seconds_sum") >= 0.3
    assert value(m, "gearshift_overhead_seconds_count") == 2
    assert value(m, "gearshift_overhead_seconds_sum") < 0.05  # ms, not the 150 ms upstream


async def test_without_upstream_usage_the_cost_is_estimated_and_marked(
    aiohttp_client: ClientFactory, make_config: MakeConfig
) -> None:
    """An OpenAI-compatible server asked for no stream usage (`stream_usage = false`):
    gearshift counts the prompt with tiktoken and one token per event, and says so."""
    toml = (
        "[[providers]]\nname = 'openai'\nkind = 'openai'\n"
        "base_url = 'https://api.openai.com/v1'\napi_key = 'env:OPENAI_API_KEY'\n"
        "stream_usage = false\n"
    )
    client = await aiohttp_client(create_app(make_config(toml)))
    body = {"model": "gpt-4o", "messages": SIMPLE, "stream": True}
    events = await sse_events(await post(client, body))
    assert events[-1] == "[DONE]"
    s = await (await client.get("/gearshift/stats")).json()
    assert s["estimated_costs"] == 1
    assert s["cost_usd"] > 0
    assert s["baseline_usd"] > s["cost_usd"]
