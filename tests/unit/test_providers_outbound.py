"""What every adapter sends upstream besides the body: the URL and headers, built once per
provider (``providers.cached``) and shared, read-only, by every request."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from gearshift.config import catalog_2024, load
from gearshift.inbound.chat import parse_chat
from gearshift.providers import REGISTRY

CONFIG = load(
    None,
    environ={
        "OPENAI_API_KEY": "sk-test-openai-0123456789",
        "ANTHROPIC_API_KEY": "sk-ant-test-0123456789",
        "GEMINI_API_KEY": "gemini-test-key-0123456789",
    },
    base=catalog_2024(),
)
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-3-haiku", "gemini": "gemini-1.5-flash"}
AUTH = {
    "openai": ("authorization", "Bearer sk-test-openai-0123456789"),
    "anthropic": ("x-api-key", "sk-ant-test-0123456789"),
    "gemini": ("x-goog-api-key", "gemini-test-key-0123456789"),
}


def _chat(text: str, stream: bool = False) -> Any:
    body = {"model": "auto", "stream": stream, "messages": [{"role": "user", "content": text}]}
    return parse_chat(orjson.dumps(body))


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_two_encodes_share_one_headers_object_and_it_is_right(kind: str) -> None:
    adapter = REGISTRY[kind]
    model = CONFIG.models[MODELS[kind]]
    first = adapter.encode_request(_chat("hi"), model)
    second = adapter.encode_request(_chat("another question", stream=True), model)
    assert second.headers is first.headers, "headers are built once per provider"
    headers = dict(first.headers)
    name, value = AUTH[kind]
    assert headers[name] == value
    assert headers["content-type"] == "application/json"
    if kind == "anthropic":
        assert headers["anthropic-version"] == "2023-06-01"
    # Shared by every request: nobody may change them.
    with pytest.raises(TypeError):
        first.headers[name] = "other"  # type: ignore[index]
    assert adapter.encode_request(_chat("hi"), model).headers[name] == value


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_the_url_is_built_once_per_provider(kind: str) -> None:
    adapter = REGISTRY[kind]
    model = CONFIG.models[MODELS[kind]]
    first = adapter.encode_request(_chat("hi"), model)
    assert adapter.encode_request(_chat("bye"), model).url is first.url
    suffix = "/chat/completions" if kind == "openai" else "/messages"
    assert first.url == model.provider.base_url + suffix


def test_gemini_urls_name_the_model_and_the_mode() -> None:
    model = CONFIG.models["gemini-1.5-flash"]
    whole = REGISTRY["gemini"].encode_request(_chat("hi"), model).url
    streamed = REGISTRY["gemini"].encode_request(_chat("hi", stream=True), model).url
    base = f"{model.provider.base_url}/models/{model.upstream_id}"
    assert (whole, streamed) == (base + ":generateContent", base + ":streamGenerateContent?alt=sse")


def test_configured_headers_are_sent_and_the_key_wins() -> None:
    from gearshift.config import decode, resolve

    raw = decode(
        b"""
        use_default_catalog = false
        [[providers]]
        name = "proxy"
        kind = "anthropic"
        base_url = "https://llm.example/v1"
        api_key = "env:K"
        headers = { "x-team" = "search", "x-api-key" = "not-this" }
        [[models]]
        name = "claude"
        provider = "proxy"
        tier = "light"
        price_in = 1
        price_out = 5
        [routing]
        default_model = "claude"
        """,
        source="t",
    )
    model = resolve(raw, source="t", environ={"K": "the-key"}).models["claude"]
    headers = REGISTRY["anthropic"].encode_request(_chat("hi"), model).headers
    assert (headers["x-team"], headers["x-api-key"]) == ("search", "the-key")
    assert model.provider.cache["anthropic.headers"] is headers
