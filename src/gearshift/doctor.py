"""``gearshift doctor``: check a catalog against the accounts its keys belong to.

For every provider with a key it lists the models the account can reach (OpenAI and
Anthropic ``GET /v1/models``, Gemini ``GET /v1beta/models``, through each adapter's
``models_request`` / ``decode_models``), then reports each catalog entry the account cannot
reach, each one with a retirement day (``retires``; past ones as retired), and, given a
price file (LiteLLM's format, ``gearshift.prices``), each price or limit that differs from
it. Nothing is changed; the exit status says whether anything needs attention.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

import aiohttp

from gearshift.config import Config, Model, Provider
from gearshift.errors import scrub
from gearshift.prices import PriceFile
from gearshift.providers import REGISTRY

_MAX_PAGES = 20
_COMPARED = ("price_in", "price_out", "price_cached_in", "price_cache_write_in",
             "price_reasoning_out", "context_window", "max_output")  # fmt: skip


@dataclass
class Listing:
    """What one provider's account lists: its model ids, or why they could not be read."""

    provider: str
    ids: set[str] = field(default_factory=set)
    error: str | None = None


@dataclass
class Report:
    listings: dict[str, Listing]
    lines: list[str]
    problems: int


async def list_models(session: aiohttp.ClientSession, provider: Provider) -> Listing:
    adapter = REGISTRY[provider.kind]
    listing = Listing(provider.name)
    secrets = [provider.api_key.reveal()] if provider.api_key else []
    page: str | None = None
    for _ in range(_MAX_PAGES):
        out = adapter.models_request(provider, page)
        try:
            async with session.get(out.url, headers=out.headers, allow_redirects=False) as resp:
                body = await resp.read()
                if resp.status != 200:
                    text = scrub(body.decode("utf-8", "replace"), *secrets, limit=200)
                    listing.error = f"HTTP {resp.status}: {text}"
                    return listing
        except (aiohttp.ClientError, TimeoutError) as exc:
            listing.error = scrub(f"{type(exc).__name__}: {exc}", *secrets, limit=200)
            return listing
        try:
            ids, page = adapter.decode_models(body)
        except (ValueError, TypeError, KeyError) as exc:
            listing.error = f"an answer that is not a model list ({exc})"
            return listing
        listing.ids.update(ids)
        if page is None:
            return listing
    listing.error = f"more than {_MAX_PAGES} pages of models: not all were read"
    return listing


def _day(today: datetime.date, text: str) -> str:
    day = datetime.date.fromisoformat(text)
    if day <= today:
        return f"retired on {text}"
    return f"retires on {text} (in {(day - today).days} days)"


def check(
    config: Config,
    listings: Mapping[str, Listing],
    prices: PriceFile | None = None,
    today: datetime.date | None = None,
) -> Report:
    """The report's lines, from the listings already made (pure: tested without a network)."""
    today = today or datetime.date.today()
    lines: list[str] = []
    problems = 0
    for name, listing in sorted(listings.items()):
        if listing.error:
            lines.append(f"provider {name}: cannot list its models: {listing.error}")
            problems += 1
        else:
            lines.append(f"provider {name}: {len(listing.ids)} models listed for this key")
    for model in sorted(config.models.values(), key=lambda m: m.name):
        if not model.offered:  # not a problem: said, not counted
            lines.append(f"  {model.name}: not offered ({model.why_not})")
            continue
        notes = _notes(model, listings, today)
        if prices is not None:
            notes += _price_notes(model, prices)
        if notes:
            problems += 1
            lines.append(
                f"  {model.name} ({model.provider.name}/{model.upstream_id}): " + "; ".join(notes)
            )
        elif model.offered:
            lines.append(f"  {model.name}: ok")
    return Report(dict(listings), lines, problems)


def _notes(model: Model, listings: Mapping[str, Listing], today: datetime.date) -> list[str]:
    notes = []
    listing = listings.get(model.provider.name)
    if listing is not None and listing.error is None and model.upstream_id not in listing.ids:
        notes.append("NOT LISTED: this key cannot reach it (withdrawn, or not on the account)")
    if model.spec.retires:
        notes.append(_day(today, model.spec.retires))
    return notes


def _price_notes(model: Model, prices: PriceFile) -> list[str]:
    entry = prices.apply(model.spec, model.provider.name, model.provider.kind)
    if entry is model.spec:
        return []
    return [
        f"{name} {getattr(model.spec, name)} -> {getattr(entry, name)} in {prices.label}"
        for name in _COMPARED
        if getattr(entry, name) != getattr(model.spec, name)
    ]


async def probe(config: Config, prices: PriceFile | None = None) -> Report:
    """List every provider that has a key and an offered model, then ``check``."""
    providers = {m.provider.name: m.provider for m in config.models.values() if m.offered}
    listings = {}
    timeout = aiohttp.ClientTimeout(total=30, connect=10)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for name, provider in providers.items():
            listings[name] = await list_models(session, provider)
    return check(config, listings, prices)


__all__ = ["Listing", "Report", "check", "list_models", "probe"]
