from __future__ import annotations

from gearshift import sse


def test_framer_splits_events_across_arbitrary_chunk_boundaries() -> None:
    stream = b'data: {"a":1}\n\ndata: {"b":2}\n\n: keep-alive\n\ndata: [DONE]\n\n'
    for step in range(1, len(stream) + 1):
        framer = sse.Framer()
        events: list[bytes] = []
        for i in range(0, len(stream), step):
            events += framer.feed(stream[i : i + step])
        assert b"".join(events) == stream
        assert [sse.data_payload(e) for e in events] == [b'{"a":1}', b'{"b":2}', None, b"[DONE]"]
        assert framer.pending == b""


def test_framer_handles_crlf_and_keeps_a_cut_event_pending() -> None:
    framer = sse.Framer()
    events = framer.feed(b'event: ping\r\ndata: {}\r\n\r\ndata: {"cut')
    assert len(events) == 1
    parsed = sse.parse(events[0])
    assert parsed is not None
    assert (parsed.name, parsed.data) == ("ping", b"{}")
    assert framer.pending == b'data: {"cut'


def test_parse_joins_multiline_data_and_ignores_comments() -> None:
    parsed = sse.parse(b": hi\ndata: line1\ndata:line2\n\n")
    assert parsed is not None
    assert parsed.data == b"line1\nline2"
    assert sse.parse(b": only a comment\n\n") is None


def test_encode_round_trips() -> None:
    raw = sse.encode(b'{"x":1}', "message_start")
    parsed = sse.parse(raw)
    assert parsed is not None
    assert (parsed.name, parsed.data) == ("message_start", b'{"x":1}')
    assert sse.encode(b"[DONE]") == b"data: [DONE]\n\n"


def test_framer_refuses_an_endless_event() -> None:
    import pytest

    framer = sse.Framer(limit=100)
    framer.feed(b"data: " + b"x" * 50)
    with pytest.raises(sse.EventTooLarge):
        framer.feed(b"x" * 60)
