"""The clock the serving path reads and waits on, injected so that tests never sleep.

Breakers, back-off, Retry-After waits and the request's deadline all run on one ``Clock``:
``now()`` (monotonic seconds), ``sleep()`` and ``call_at()``. ``Scope`` is a deadline on
that clock, with ``asyncio.timeout``'s contract: the body is cancelled when the deadline
passes and ``TimeoutError`` comes out of the ``async with``; ``expire()`` ends it early (a
breaker opened on the deployment the body waits for). With a fake clock a test moves time
by hand, and every deadline fires exactly when the fake time passes it.

Transport timeouts (connect, first byte of the headers, idle gaps between reads) are I/O
concerns of the real transport and stay on the event loop's own time.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol


class Handle(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds, a way to wait, and a way to be called back at a time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle: ...


class SystemClock:
    """The real clock: ``time.monotonic``, ``asyncio.sleep`` and the loop's timers."""

    __slots__ = ()

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def call_at(self, when: float, callback: Callable[[], None]) -> Handle:
        delay = max(0.0, when - time.monotonic())
        return asyncio.get_running_loop().call_later(delay, callback)


class Scope:
    """``async with Scope(clock, when):`` — the body is cancelled at ``when`` (clock time)
    and ``TimeoutError`` raised in its place; ``math.inf`` never fires."""

    __slots__ = ("_cancelling", "_clock", "_exited", "_expired", "_handle", "_task", "when")

    def __init__(self, clock: Clock, when: float) -> None:
        self._clock = clock
        self.when = when
        self._task: asyncio.Task[object] | None = None
        self._handle: Handle | None = None
        self._expired = False
        self._exited = False
        self._cancelling = 0

    async def __aenter__(self) -> Scope:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Scope must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        if self.when <= self._clock.now():
            self._fire()
        elif not math.isinf(self.when):
            self._handle = self._clock.call_at(self.when, self._fire)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exited = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        # Our cancellation, not somebody else's, becomes a TimeoutError.
        if (
            self._expired
            and self._task is not None
            and self._task.uncancel() <= self._cancelling
            and kind is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    def _fire(self) -> None:
        if self._expired or self._exited or self._task is None:
            return
        self._expired = True
        self._handle = None
        self._task.cancel()

    def expire(self) -> None:
        """End the body now, as if its deadline had passed."""
        self._fire()

    def expired(self) -> bool:
        return self._expired


__all__ = ["Clock", "Handle", "Scope", "SystemClock"]
