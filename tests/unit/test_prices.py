"""A price file in LiteLLM's format overrides the catalog's prices and limits by id."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gearshift.config import ConfigError, decode, resolve

# A small file in the shape of LiteLLM's model_prices_and_context_window.json: costs in USD
# per token, its documentation entry, entries of other providers for the same ids.
PRICES = {
    "sample_spec": {
        "input_cost_per_token": "input cost per token (USD)",
        "max_input_tokens": "max input tokens",
    },
    "gpt-4o-mini": {
        "input_cost_per_token": 1.5e-07,
        "output_cost_per_token": 6e-07,
        "cache_read_input_token_cost": 7.5e-08,
        "max_input_tokens": 128000,
        "max_output_tokens": 16384,
        "litellm_provider": "openai",
    },
    "claude-3-haiku-20240307": {
        "input_cost_per_token": 2.5e-07,
        "output_cost_per_token": 1.25e-06,
        "cache_creation_input_token_cost": 3e-07,
        "cache_read_input_token_cost": 3e-08,
        "max_input_tokens": 200000,
        "max_output_tokens": 4096,
        "litellm_provider": "anthropic",
    },
    # The same id on Vertex AI: not the Gemini API's price.
    "gemini-1.5-flash": {"input_cost_per_token": 9e-06, "litellm_provider": "vertex_ai"},
    "gemini/gemini-1.5-flash": {
        "input_cost_per_token": 7.5e-08,
        "output_cost_per_token": 3e-07,
        "output_cost_per_reasoning_token": 3.5e-06,
        "max_input_tokens": 1048576,
        "max_output_tokens": 8192,
        "litellm_provider": "gemini",
    },
    "local/my-model": {"input_cost_per_token": 1e-07, "output_cost_per_token": 2e-07},
}

MODELS = """
[[models]]
name = "mini"
provider = "openai"
upstream_id = "gpt-4o-mini"
tier = "light"
price_in = 9
price_out = 9
source = "https://example.com/pricing"
checked = "2026-01-01"

[[models]]
name = "haiku"
provider = "anthropic"
upstream_id = "claude-3-haiku-20240307"
tier = "light"
price_in = 9
price_out = 9

[[models]]
name = "flash"
provider = "gemini"
upstream_id = "gemini-1.5-flash"
tier = "light"
price_in = 9
price_out = 9
context_window = 1000

[[models]]
name = "mine"
provider = "local"
upstream_id = "my-model"
tier = "light"
price_in = 9
price_out = 9

[[models]]
name = "unpriced"
provider = "openai"
upstream_id = "not-in-the-file"
tier = "light"
price_in = 9
price_out = 9
"""
LOCAL = "[[providers]]\nname = 'local'\nkind = 'openai'\nbase_url = 'http://127.0.0.1:9/v1'\n"


def _config(tmp_path: Path, prices: object = PRICES) -> object:
    path = tmp_path / "prices.json"
    path.write_bytes(orjson.dumps(prices))
    text = f"use_default_catalog = false\nprice_file = '{path}'\n" + LOCAL + MODELS
    for kind in ("openai", "anthropic", "gemini"):
        text += f"[[providers]]\nname = '{kind}'\nkind = '{kind}'\nbase_url = 'http://h'\n"
    return resolve(decode(text.encode(), source="t.toml"), source="t.toml", environ={})


def test_prices_and_limits_come_from_the_file(tmp_path: Path) -> None:
    config = _config(tmp_path)
    mini = config.models["mini"].spec  # type: ignore[attr-defined]
    assert (mini.price_in, mini.price_out, mini.price_cached_in) == (0.15, 0.6, 0.075)
    assert (mini.context_window, mini.max_output) == (128000, 16384)
    assert mini.source == "price file prices.json"
    assert mini.checked is not None
    haiku = config.models["haiku"].spec  # type: ignore[attr-defined]
    assert (haiku.price_cache_write_in, haiku.price_cached_in) == (0.3, 0.03)
    flash = config.models["flash"].spec  # type: ignore[attr-defined]
    assert flash.price_in == 0.075, "the gemini/ entry, not Vertex's"
    assert flash.price_reasoning_out == 3.5
    assert flash.context_window == 1048576
    mine = config.models["mine"].spec  # type: ignore[attr-defined]
    assert (mine.price_in, mine.price_out) == (0.1, 0.2)  # by provider name
    unpriced = config.models["unpriced"].spec  # type: ignore[attr-defined]
    assert (unpriced.price_in, unpriced.source) == (9, None)  # kept as written


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), (b"{nope", "not JSON"), (b"[1, 2]", "not a JSON object")],
)
def test_a_price_file_that_cannot_be_used_is_a_config_error(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "prices.json"
    if content is not None:
        path.write_bytes(content)
    text = f"price_file = '{path}'\n"
    with pytest.raises(ConfigError, match=rf"\$\.price_file: .*{message}"):
        resolve(decode(text.encode(), source="t.toml"), source="t.toml", environ={})


def test_absurd_values_in_the_file_are_ignored(tmp_path: Path) -> None:
    prices = {
        "gpt-4o-mini": {
            "input_cost_per_token": 1e9,
            "output_cost_per_token": -1,
            "max_input_tokens": 10**12,
        }
    }
    config = _config(tmp_path, prices)
    mini = config.models["mini"].spec  # type: ignore[attr-defined]
    assert (mini.price_in, mini.price_out, mini.context_window) == (9, 9, 128_000)
    assert mini.source == "https://example.com/pricing"
