"""The access log: one JSON object per finished request: request id,
requested and routed model, tier, score, tokens, cost, baseline, latency, overhead,
attempts, status. Prompt text only with ``server.log_prompts = true``, and then with the
provider keys and key-like tokens masked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, BinaryIO

import orjson

from gearshift.config import Config
from gearshift.errors import scrub
from gearshift.serve.exchange import Exchange

access_log = logging.getLogger("gearshift.access")
_ATOMIC = 4096  # PIPE_BUF on Linux: writes up to this size to a pipe are never interleaved


class BatchWriter:
    """Access-log lines batched in memory and written at most every ``interval`` seconds (or
    on ``flush``): one write per batch instead of a logging record and a system call per
    request. A batch stays within ``PIPE_BUF`` (4 KiB), so that the workers of
    ``serve --workers`` sharing one stdout pipe never interleave inside a line."""

    __slots__ = ("_buffer", "_handle", "_interval", "_stream")

    def __init__(self, stream: BinaryIO, interval: float = 0.2) -> None:
        self._stream = stream
        self._interval = interval
        self._buffer = bytearray()
        self._handle: asyncio.TimerHandle | None = None

    def write(self, line: bytes) -> None:
        if len(self._buffer) + len(line) >= _ATOMIC:
            self.flush()
        self._buffer += line
        self._buffer += b"\n"
        if len(self._buffer) >= _ATOMIC:
            self.flush()  # a single long line (prompts logged): on its own
        elif self._handle is None:
            self._handle = asyncio.get_running_loop().call_later(self._interval, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._buffer:
            self._stream.write(self._buffer)
            self._stream.flush()
            self._buffer.clear()


class AccessLog:
    """The access-log sink: one JSON line per request, to a ``BatchWriter`` when one is
    given (``gearshift serve``: stdout), else to the ``gearshift.access`` logger."""

    __slots__ = ("_log_prompts", "_secrets", "writer")

    def __init__(self, config: Config, writer: BatchWriter | None = None) -> None:
        self.writer = writer
        self._log_prompts = config.server.log_prompts
        self._secrets: tuple[str, ...] = ()
        self.retarget(config)

    def retarget(self, config: Config) -> None:
        """The secrets masked in logged prompts: ``config``'s (at start-up, after a reload)."""
        self._secrets = tuple(
            p.api_key.reveal() for p in config.providers.values() if p.api_key is not None
        ) + tuple(k.reveal() for k in config.proxy_keys)

    def begin(self, ex: Exchange) -> None:
        pass

    def finish(self, ex: Exchange) -> None:
        if self.writer is not None:
            self.writer.write(self._line(ex))
        elif access_log.isEnabledFor(logging.INFO):
            access_log.info(self._line(ex).decode())

    def _line(self, ex: Exchange) -> bytes:
        a = ex.account
        now = time.perf_counter()
        doc: dict[str, Any] = {
            "ts": time.time(),
            "request_id": ex.request_id,
            "requested_model": ex.requested,
            "model": ex.model,
            "provider": ex.provider,
            "tier": ex.tier,
            "score": ex.score,
            "stream": ex.stream,
            "status": ex.status,
            "prompt_tokens": a.tokens.prompt if a else None,
            "completion_tokens": a.tokens.completion if a else None,
            "cost_usd": a.cost_usd if a else None,
            "baseline_usd": a.baseline_usd if a else None,
            "estimated": a.tokens.estimated if a else None,
            "latency_ms": round(ex.latency_s(now) * 1e3, 3),
            "overhead_ms": round(ex.overhead_s(now) * 1e3, 4),
            "attempts": [str(x) for x in ex.attempts],
        }
        if self._log_prompts and ex.prompt is not None:
            doc["prompt"] = scrub(ex.prompt, *self._secrets, limit=4000)
        return orjson.dumps(doc)


__all__ = ["AccessLog", "BatchWriter", "access_log"]
