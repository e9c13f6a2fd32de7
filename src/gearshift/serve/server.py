"""The HTTP server around the app: aiohttp's protocol, with the guards a proxy exposed to
careless or hostile clients needs, and the run loop of ``gearshift serve``.

- **Request heads in time.** A request's line and headers must arrive within
  ``header_timeout`` of its first byte (of the connection's opening, for the first
  request); a connection that dribbles them is closed (by a sweep every quarter of the
  timeout, so within 1.25 times it: no timer per request). The body has its own bound
  (``server.body_timeout``, enforced by the handler: 408).
- **Unfinished requests are capped**, in total and per peer: when one more connection would
  be too many waiting for a request head, the oldest of them (of the same peer, at the
  per-peer cap) is closed, so that half-sent requests cannot use up the file descriptors
  real requests need, and a real client, whose head arrives within milliseconds, is never
  the one turned away. Idle keep-alive connections close after ``keepalive_timeout``.
- **aiohttp's own parse errors** (a header too long, too many headers, a bad
  Content-Length, Content-Length with Transfer-Encoding, an unknown method …) are answered
  in OpenAI's error shape, not as text, and logged as one WARNING line, rate-limited,
  without a traceback. No ``Server`` header names Python or aiohttp versions.

aiohttp offers no hook for these, so ``GuardedHandler`` extends its ``RequestHandler``
(three of its methods, and its request counter); the tests exercise each guard against a
real server on loopback, so an aiohttp upgrade that moves them fails loudly.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler, RequestPayloadError
from aiohttp.web_request import BaseRequest

from gearshift.errors import BadRequest, GearshiftError

log = logging.getLogger("gearshift.server")
SERVER_NAME = "gearshift"


@dataclass(frozen=True, slots=True)
class Guards:
    """The connection-level limits (``[server]`` settings; defaults in ``config``)."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    max_pending: int = 512  # connections waiting for a request head, in all
    max_pending_per_peer: int = 256


# Connections the kernel may queue before gearshift accepts them (capped by the kernel's
# net.core.somaxconn). aiohttp's default of 128 overflows when a few thousand clients
# connect at once: dropped handshakes, retried by the clients' kernels 1, 2, 4 … s later.
LISTEN_BACKLOG = 4096
# The open-file soft limit gearshift raises itself to (never above the hard limit): every
# stream holds two descriptors (the client's and the upstream's), and the usual soft
# limit of 1024 would refuse the 513th stream.
OPEN_FILES = 65536


def raise_open_files(want: int = OPEN_FILES) -> int:
    """Raise the soft open-file limit towards ``want`` (up to the hard limit); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return soft
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft
        return target
    return soft


def default_max_pending() -> int:
    """Half the open-file limit, at most 512: half-sent requests never use up the
    descriptors that real requests need."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 512
    return max(16, min(512, soft // 2))


class RateLimitedLog:
    """At most ``burst`` lines per ``period`` seconds; what is dropped is counted and said
    with the next line that goes out."""

    __slots__ = ("_burst", "_dropped", "_logger", "_period", "_sent", "_since")

    def __init__(self, logger: logging.Logger, burst: int = 10, period: float = 10.0) -> None:
        self._logger = logger
        self._burst = burst
        self._period = period
        self._since = -period
        self._sent = 0
        self._dropped = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._since >= self._period:
            self._since, self._sent = now, 0
        if self._sent >= self._burst:
            self._dropped += 1
            return
        self._sent += 1
        if self._dropped:
            message += f" ({self._dropped} similar lines suppressed)"
            self._dropped = 0
        self._logger.warning(message, *args)


class _Pending:
    """Connections waiting for a request head, oldest first, in all and by peer, with when
    they began to wait. One sweep every quarter of ``header_timeout`` closes the late ones
    (while any wait): a request costs two dict operations, not a timer."""

    __slots__ = ("all", "by_peer", "closed", "guards", "loop", "sweep")

    def __init__(self, guards: Guards, loop: asyncio.AbstractEventLoop) -> None:
        self.guards = guards
        self.loop = loop
        self.all: dict[GuardedHandler, float] = {}  # insertion order: the oldest first
        self.by_peer: dict[str, dict[GuardedHandler, None]] = {}
        self.sweep: asyncio.TimerHandle | None = None
        self.closed = False

    def add(self, handler: GuardedHandler) -> None:
        self.all[handler] = self.loop.time()
        self.by_peer.setdefault(handler.peer, {})[handler] = None
        if self.sweep is None and not self.closed:
            self.sweep = self.loop.call_later(self.guards.header_timeout / 4, self._sweep)

    def remove(self, handler: GuardedHandler) -> None:
        del self.all[handler]
        mine = self.by_peer[handler.peer]
        del mine[handler]
        if not mine:
            del self.by_peer[handler.peer]

    def oldest_over(self, peer: str) -> GuardedHandler | None:
        """The connection to close so that one more from ``peer`` fits, or None."""
        mine = self.by_peer.get(peer, {})
        if len(mine) >= self.guards.max_pending_per_peer:
            return next(iter(mine))
        if len(self.all) >= self.guards.max_pending:
            return next(iter(self.all))
        return None

    def _sweep(self) -> None:
        self.sweep = None
        due = self.loop.time() - self.guards.header_timeout
        late = []
        for handler, began in self.all.items():
            if began > due:
                break  # the rest began later
            late.append(handler)
        for handler in late:
            handler._head_late()
        if self.all and not self.closed:
            self.sweep = self.loop.call_later(self.guards.header_timeout / 4, self._sweep)

    def close(self) -> None:
        self.closed = True
        if self.sweep is not None:
            self.sweep.cancel()
            self.sweep = None


class GuardedHandler(RequestHandler):
    """aiohttp's protocol, plus the head timeout, the pending caps and shaped errors."""

    def __init__(
        self,
        manager: web.Server,
        *,
        guards: Guards,
        pending: _Pending,
        warnings: RateLimitedLog,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._guards = guards
        self._pending = pending
        self._warnings = warnings
        self.peer = "?"
        self._waiting = False  # for a request head (in ``_pending``)
        self._open_requests = 0  # heads complete, responses not yet out (pipelining: >1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        super().connection_made(transport)
        # At the cap, the oldest connection still sending its head makes room: a dribbling
        # client is the oldest, a real one sends its head within milliseconds.
        oldest = self._pending.oldest_over(self.peer)
        if oldest is not None:
            oldest._evict()
        self._head_begin()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._head_end()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._open_requests and not self._waiting:
            self._head_begin()  # the first bytes of the next request on this connection
        before = self._request_count
        super().data_received(data)
        if self._request_count != before:  # heads are complete (one, or more pipelined)
            self._open_requests += self._request_count - before
            self._head_end()

    def log_access(self, request: BaseRequest, response: web.StreamResponse, time: Any) -> None:
        # A response is out; with none left open, the next bytes start a new head.
        self._open_requests = max(0, self._open_requests - 1)
        super().log_access(request, response, time)

    def _head_begin(self) -> None:
        if not self._waiting and self.transport is not None:
            self._waiting = True
            self._pending.add(self)

    def _head_end(self) -> None:
        if self._waiting:
            self._waiting = False
            self._pending.remove(self)

    def _head_late(self) -> None:
        self._head_end()
        self._warnings.warning(
            "closed a connection from %s: no complete request head within %g s",
            self.peer,
            self._guards.header_timeout,
        )
        self.force_close()

    def _evict(self) -> None:
        self._head_end()
        guards = self._guards
        self._warnings.warning(
            "closed the oldest connection from %s still sending a request head: too many "
            "waiting (limits: %d in all, %d per peer)",
            self.peer,
            guards.max_pending,
            guards.max_pending_per_peer,
        )
        self.force_close()

    def end_unread(self) -> None:
        """Close the connection after this response, without reading what is left of the
        request body first (aiohttp's lingering close would wait for it: a slow client's
        body is what the 408 was for)."""
        self._lingering_time = 0.0
        self.close()

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """aiohttp's tracebacks for malformed requests: one WARNING line, rate-limited.
        Anything else (a bug that escaped the app) keeps its ERROR and traceback."""
        exc = kw.get("exc_info")
        if isinstance(exc, BaseException) and not isinstance(
            exc, HttpProcessingError | RequestPayloadError
        ):
            super().log_exception(*args, **kw)
            return
        what = f"{type(exc).__name__}: {str(exc).strip()[:200]}" if exc else ""
        message = str(args[0]) % args[1:] if args else "error"
        self._warnings.warning("%s%s", message, f" ({what})" if what else "")

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp could not parse, answered in OpenAI's error shape."""
        what = "malformed request" if status < 500 else "error handling a request"
        self.log_exception("%s from %s", what, self.peer, exc_info=exc)
        if request.writer.output_size > 0:
            raise ConnectionError("the response had started: no error can follow it")
        lines = (message or "").strip().splitlines()
        text = lines[0][:200] if lines else ""
        error: GearshiftError
        if status < 500:
            what = f"Malformed HTTP request: {text}" if text else "Malformed HTTP request."
            error = BadRequest(what, status=status, code="malformed_request")
        else:
            error = GearshiftError("Internal error in gearshift.", code="internal_error")
        response = web.Response(
            status=status,
            body=error.body(),
            content_type="application/json",
            headers={"server": SERVER_NAME},
        )
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's low-level server, making ``GuardedHandler`` protocols."""

    def __init__(
        self, handler: Any, *, guards: Guards, handler_kwargs: dict[str, Any], **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._guards = guards
        self._handler_kwargs = handler_kwargs
        self._pending = _Pending(guards, self._loop)
        self._warnings = RateLimitedLog(log)

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (aiohttp's)
        self._pending.close()
        await super().shutdown(timeout)

    def __call__(self) -> RequestHandler:
        return GuardedHandler(
            self,
            guards=self._guards,
            pending=self._pending,
            warnings=self._warnings,
            loop=self._loop,
            **self._handler_kwargs,
        )


class GuardedRunner(web.AppRunner):
    """An ``AppRunner`` whose server is a ``GuardedServer``."""

    def __init__(self, app: web.Application, *, guards: Guards, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guards = guards
        self._handler_kwargs = {
            k: v for k, v in kwargs.items() if k not in ("handle_signals", "shutdown_timeout")
        }
        self._handler_kwargs.pop("handler_cancellation", None)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # the app's startup, as aiohttp does it
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            guards=self._guards,
            handler_kwargs=self._handler_kwargs,
        )


async def start(
    app: web.Application,
    host: str,
    port: int,
    *,
    guards: Guards,
    reuse_port: bool = False,
    shutdown_timeout: float = 60.0,
    handle_signals: bool = False,
) -> GuardedRunner:
    """The app served on ``host:port`` with the guards; ``await runner.cleanup()`` ends it."""
    runner = GuardedRunner(
        app,
        guards=guards,
        handle_signals=handle_signals,
        access_log=None,
        handler_cancellation=True,
        keepalive_timeout=guards.keepalive_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None, backlog=LISTEN_BACKLOG)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


# The collector's youngest generation is collected after this many allocations (Python's
# default is 700: a request allocates several hundred objects, so nearly every request paid for
# a collection that found little garbage).
GC_YOUNG_THRESHOLD = 20_000


def quiet_gc() -> None:
    """Tune the garbage collector for serving: what exists at start-up (the rule table's
    word maps: ~100k objects) is frozen out of every later collection, and collections run
    less often. Requests create little cyclic garbage; reference counting frees the rest.
    About 7 % of a request's CPU under load (bench/RESULTS.md)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def run(
    app: web.Application,
    host: str,
    port: int,
    *,
    guards: Guards,
    reuse_port: bool = False,
    shutdown_timeout: float = 60.0,
    loop: asyncio.AbstractEventLoop,
    on_listen: Callable[[], None] = lambda: None,
    on_hangup: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM, then drain (``web.run_app``'s contract); on SIGHUP,
    ``on_hangup`` (the configuration's reload)."""

    async def serve() -> None:
        runner = await start(
            app,
            host,
            port,
            guards=guards,
            reuse_port=reuse_port,
            shutdown_timeout=shutdown_timeout,
            handle_signals=True,
        )
        if on_hangup is not None:
            loop.add_signal_handler(signal.SIGHUP, on_hangup)
        on_listen()
        quiet_gc()
        try:
            await asyncio.Event().wait()  # until a signal raises GracefulExit
        finally:
            await runner.cleanup()

    asyncio.set_event_loop(loop)
    main = loop.create_task(serve())
    try:
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        main.cancel()
        try:
            loop.run_until_complete(main)
        except (asyncio.CancelledError, web.GracefulExit, KeyboardInterrupt):
            pass
        finally:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = asyncio.all_tasks(loop)
    for task in tasks:
        task.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


__all__ = ["SERVER_NAME", "GuardedRunner", "Guards", "default_max_pending", "run", "start"]
