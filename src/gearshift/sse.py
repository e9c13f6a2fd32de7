"""Server-sent events: incremental framing (bytes in, whole events out) and encoding.

The framer never buffers a whole stream: it keeps only the bytes of the event that has not
ended yet. Events end at a blank line; ``\\n``, ``\\r\\n`` and ``\\r`` line ends are all valid.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_LINE = re.compile(rb"\r\n|\n|\r")
DONE = b"[DONE]"


@dataclass(slots=True)
class Event:
    """One SSE event: its ``event:`` name (or None) and its ``data:`` lines joined by ``\\n``."""

    data: bytes
    name: str | None = None


class EventTooLarge(ValueError):
    """An event grew past the framer's limit without ending: not a sane SSE stream."""


class Framer:
    """Splits a byte stream into raw events (each with its terminating blank line)."""

    __slots__ = ("_buf", "_limit")

    def __init__(self, limit: int = 8 * 1024 * 1024) -> None:
        self._buf = b""
        self._limit = limit

    def feed(self, chunk: bytes) -> list[bytes]:
        """Return the events completed by ``chunk``, each ending with its blank line.

        Only the new bytes (and the last three old ones, where a boundary may straddle the
        chunks) are scanned, so a long event costs linear time; ``EventTooLarge`` past
        the limit.
        """
        old = len(self._buf)
        buf = self._buf + chunk if old else chunk
        events: list[bytes] = []
        start = 0
        for match in _BOUNDARY.finditer(buf, max(0, old - 3)):
            end = match.end()
            events.append(buf[start:end])
            start = end
        self._buf = buf[start:]
        if len(self._buf) > self._limit:
            raise EventTooLarge(f"an SSE event exceeded {self._limit} bytes")
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event that has started but not ended (non-empty at a cut stream)."""
        return self._buf


def parse(raw: bytes) -> Event | None:
    """Parse one raw event; None for an event with neither data nor a name (comments only)."""
    name: str | None = None
    data: list[bytes] = []
    for line in _LINE.split(raw):
        if not line or line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if key == b"data":
            data.append(value)
        elif key == b"event":
            name = value.decode("utf-8", "replace")
    if not data and name is None:
        return None
    return Event(b"\n".join(data), name)


def no_content(raw: bytes) -> bool:
    """An event that carries nothing for a client: comments (``: keep-alive``), ``id:`` and
    ``retry:`` fields and blank lines only."""
    return all(not line or line.startswith((b":", b"id:", b"retry:")) for line in _LINE.split(raw))


def data_payload(raw: bytes) -> bytes | None:
    """The data of a raw event that is a single ``data:`` line (OpenAI's framing), fast path."""
    if raw.startswith(b"data:"):
        line = raw[5:].strip()
        if b"\n" not in line and b"\r" not in line:
            return line
    event = parse(raw)
    return None if event is None else event.data


def named_data(raw: bytes) -> bytes | None:
    """The data of an event framed exactly as Anthropic's and OpenAI's Responses streams
    frame them (``event: <name>``, one ``data: <json>`` line, a blank line; ``\n`` line
    ends), without ``parse``'s line loop; None for any other framing, which ``parse`` reads
    (the same data for these)."""
    lines = raw.split(b"\n")
    if (
        len(lines) == 4
        and not lines[2]
        and not lines[3]
        and lines[1].startswith(b"data: ")
        and lines[0].startswith(b"event: ")
        and b"\r" not in raw
    ):
        return lines[1][6:]
    return None


def encode(data: bytes, name: str | None = None) -> bytes:
    """Frame ``data`` (one line of JSON) as an SSE event."""
    if name is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
