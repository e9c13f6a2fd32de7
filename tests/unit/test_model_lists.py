"""Each adapter's model list request and decoder (``gearshift doctor``), in its API's shape."""

from __future__ import annotations

import orjson
import pytest

from gearshift.config import catalog_2024, load
from gearshift.providers import REGISTRY

CONFIG = load(
    None,
    environ={"OPENAI_API_KEY": "o", "ANTHROPIC_API_KEY": "a", "GEMINI_API_KEY": "g"},
    base=catalog_2024(),
)


def test_openai_lists_one_page() -> None:
    out = REGISTRY["openai"].models_request(CONFIG.providers["openai"], None)
    assert out.url == "https://api.openai.com/v1/models"
    assert out.headers["authorization"] == "Bearer o"
    body = orjson.dumps({"object": "list", "data": [{"id": "gpt-4o"}, {"id": 3}, "x"]})
    assert REGISTRY["openai"].decode_models(body) == (["gpt-4o"], None)


def test_anthropic_pages_by_the_last_id() -> None:
    adapter, provider = REGISTRY["anthropic"], CONFIG.providers["anthropic"]
    first = adapter.models_request(provider, None)
    assert first.url.endswith("/v1/models?limit=1000")
    assert first.headers["x-api-key"] == "a"
    assert "anthropic-version" in first.headers
    page = {"data": [{"type": "model", "id": "claude-a"}], "has_more": True, "last_id": "claude-a"}
    assert adapter.decode_models(orjson.dumps(page)) == (["claude-a"], "claude-a")
    assert adapter.models_request(provider, "claude-a").url.endswith("&after_id=claude-a")
    last = {**page, "has_more": False}
    assert adapter.decode_models(orjson.dumps(last)) == (["claude-a"], None)


def test_gemini_pages_by_token_and_drops_the_models_prefix() -> None:
    adapter, provider = REGISTRY["gemini"], CONFIG.providers["gemini"]
    assert adapter.models_request(provider, None).headers["x-goog-api-key"] == "g"
    page = {"models": [{"name": "models/gemini-x"}], "nextPageToken": "t/1"}
    assert adapter.decode_models(orjson.dumps(page)) == (["gemini-x"], "t/1")
    assert adapter.models_request(provider, "t/1").url.endswith("&pageToken=t%2F1")
    assert adapter.decode_models(b'{"models": []}') == ([], None)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_an_answer_that_is_not_a_list_is_refused(kind: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        REGISTRY[kind].decode_models(b'{"error": {"message": "no"}}')
