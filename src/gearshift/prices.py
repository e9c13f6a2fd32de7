"""Prices and context windows from a price file, without a gearshift release.

The file is the JSON map the LLM-gateway ecosystem already maintains: LiteLLM's
``model_prices_and_context_window.json`` (https://github.com/BerriAI/litellm), model id →
``{"input_cost_per_token", "output_cost_per_token", "cache_read_input_token_cost",
"cache_creation_input_token_cost", "output_cost_per_reasoning_token", "max_input_tokens",
"max_output_tokens", "litellm_provider", …}`` with costs in USD per token. A user downloads
it (or writes a small one) and names it in the configuration (``price_file = "..."``);
gearshift reads it once at start-up and never fetches anything.

A catalog entry matches the key ``<provider name>/<upstream id>``, then ``<kind>/<upstream
id>``, then the bare upstream id, and only an entry of that provider (its
``litellm_provider`` is the provider's name or kind, or absent): a Vertex or Bedrock price
for the same id is not taken for the Gemini or Anthropic API. What the entry has replaces
the catalog's prices (per 1M tokens), context window and maximum output; what it lacks
stays as the catalog says. Entries that are not price records (LiteLLM's ``sample_spec``,
holding descriptions) are skipped.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import orjson

from gearshift.config_checks import ConfigError

# Price file field → ModelSpec field, for costs per token (times 1e6: per 1M tokens).
_COSTS = {
    "input_cost_per_token": "price_in",
    "output_cost_per_token": "price_out",
    "cache_read_input_token_cost": "price_cached_in",
    "cache_creation_input_token_cost": "price_cache_write_in",
    "output_cost_per_reasoning_token": "price_reasoning_out",
}
_LIMITS = {"max_input_tokens": "context_window", "max_output_tokens": "max_output"}
_PRICE_MAX = 100_000.0  # USD per 1M tokens: the catalog's own bound
_TOKENS_MAX = 100_000_000


class PriceFile:
    """A loaded price file: its entries and what to call it in the catalog's ``source``."""

    __slots__ = ("checked", "entries", "label")

    def __init__(self, entries: Mapping[str, Mapping[str, Any]], label: str, checked: str):
        self.entries = entries
        self.label = label
        self.checked = checked

    def find(self, provider: str, kind: str, upstream_id: str) -> Mapping[str, Any] | None:
        for key in (f"{provider}/{upstream_id}", f"{kind}/{upstream_id}", upstream_id):
            entry = self.entries.get(key)
            if entry is not None and entry.get("litellm_provider") in (None, provider, kind):
                return entry
        return None

    def apply(self, spec: Any, provider: str, kind: str) -> Any:
        """``spec`` (a ``ModelSpec``) with the entry's prices and limits, or as it was."""
        entry = self.find(provider, kind, spec.upstream_id or spec.name)
        if entry is None:
            return spec
        changes: dict[str, Any] = {}
        for field, target in _COSTS.items():
            value = _number(entry.get(field))
            if value is not None and value * 1e6 <= _PRICE_MAX:
                changes[target] = round(value * 1e6, 6)
        for field, target in _LIMITS.items():
            value = _number(entry.get(field))
            if value is not None and 0 < value <= _TOKENS_MAX:
                changes[target] = int(value)
        if not changes:
            return spec
        changes["source"] = self.label
        changes["checked"] = self.checked
        return msgspec.structs.replace(spec, **changes)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) and value >= 0 else None


def load(path: str, where: str) -> PriceFile:
    """The price file at ``path`` (relative: from the working directory), or a
    ``ConfigError`` naming ``where``."""
    file = Path(path)
    try:
        raw = file.read_bytes()
        doc = orjson.loads(raw)
    except OSError as exc:
        raise ConfigError(f"{where}: {path}: cannot read: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {path}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: {path}: not a JSON object of model id → prices")
    entries = {k: v for k, v in doc.items() if isinstance(v, dict)}
    mtime = datetime.datetime.fromtimestamp(file.stat().st_mtime, tz=datetime.UTC)
    return PriceFile(entries, f"price file {file.name}", mtime.date().isoformat())


__all__ = ["PriceFile", "load"]
