"""The embedded default catalog: today's models, each entry sourced, dated, priced and
reachable (on the mock providers, whose model lists are the providers' own shapes)."""

from __future__ import annotations

import datetime

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from gearshift import doctor
from gearshift.config import catalog_2024, default_catalog, load

KEYS = {
    "OPENAI_API_KEY": "sk-catalog-0123456789",
    "ANTHROPIC_API_KEY": "sk-ant-catalog",
    "GEMINI_API_KEY": "g-catalog",
}
ENTRIES = default_catalog().models


@pytest.mark.parametrize("spec", ENTRIES, ids=[m.name for m in ENTRIES])
def test_every_entry_has_a_source_a_checked_day_prices_and_limits(spec: object) -> None:
    from gearshift.config import ModelSpec

    assert isinstance(spec, ModelSpec)
    assert spec.source is not None
    assert spec.source.startswith("https://")
    assert spec.checked is not None
    assert datetime.date(2026, 11, 1) <= datetime.date.fromisoformat(spec.checked)
    assert spec.price_in > 0
    assert spec.price_out > 0
    assert spec.price_cached_in is not None
    assert 0 < spec.price_cached_in < spec.price_in
    assert spec.context_window >= 100_000
    assert 0 < spec.max_output <= spec.context_window
    # Every current model reasons; none is past its retirement.
    assert spec.reasoning is not None
    assert spec.reasoning.efforts
    assert spec.reasoning.default in spec.reasoning.efforts
    assert spec.retires is None or spec.retires > spec.checked


def test_each_provider_offers_every_tier() -> None:
    config = load(None, environ=KEYS)
    for provider in ("openai", "anthropic", "gemini"):
        tiers = {m.tier for m in config.models.values() if m.provider.name == provider}
        assert tiers == {"light", "standard", "frontier"}, provider


def test_the_2024_table_is_an_example_not_the_default() -> None:
    names = {m.name for m in ENTRIES}
    old = {m.name for m in catalog_2024().models}
    assert old == {
        "gpt-4o",
        "gpt-4o-mini",
        "claude-3-5-sonnet",
        "claude-3-haiku",
        "gemini-1.5-pro",
        "gemini-1.5-flash",
    }
    assert not names & old
    config = load(None, environ=KEYS, base=catalog_2024())
    assert {m.name for m in config.offered} == old


async def test_every_entry_is_listed_by_the_mock_providers(mock_upstream: TestServer) -> None:
    """``gearshift doctor``'s check on the default catalog against the mock's model lists
    (OpenAI and Anthropic ``GET /v1/models``, Gemini ``GET /v1beta/models``): no entry the
    accounts cannot reach."""
    base = str(mock_upstream.make_url(""))
    env = {
        **KEYS,
        "GEARSHIFT_OPENAI_BASE_URL": base + "/v1",
        "GEARSHIFT_ANTHROPIC_BASE_URL": base + "/v1",
        "GEARSHIFT_GEMINI_BASE_URL": base + "/v1beta",
    }
    config = load(None, environ=env)
    async with aiohttp.ClientSession() as session:
        listings = {
            name: await doctor.list_models(session, provider)
            for name, provider in config.providers.items()
        }
    report = doctor.check(config, listings, today=datetime.date(2026, 12, 7))
    assert report.problems == 0, "\n".join(report.lines)
    assert sum(line.endswith(": ok") for line in report.lines) == len(ENTRIES)
