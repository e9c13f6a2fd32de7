"""Circuit breakers, one per deployment (provider + model), and the clock they read.

::

    closed ──(failures in a row, or failure ratio over the window)──▶ open
    open ──(cool-down passed: at least any Retry-After)──▶ half-open
    half-open ──(a probe succeeds)──▶ closed
    half-open ──(a probe fails)──▶ open
    any ──(the provider says the model does not exist)──▶ withdrawn
    withdrawn ──(its long cool-down passed)──▶ half-open

A caller asks ``acquire()`` before a call and reports exactly one of ``success()``,
``failure()`` or ``release()`` (no verdict: the client left, the request could not be sent)
after it. Half-open lets ``probes`` calls through at a time. The clock is injected: nothing
here sleeps or reads the time itself, so tests drive it by hand.

State is per process, by design (like Envoy's outlier detection): each sidecar learns about
its upstreams from its own traffic.
"""

from __future__ import annotations

from collections.abc import Callable

from gearshift.config import BreakerSpec, Model
from gearshift.serve.clock import Clock

CLOSED, HALF_OPEN, OPEN, WITHDRAWN = 0, 1, 2, 3
STATE_NAMES = ("closed", "half_open", "open", "withdrawn")
PAUSED = (OPEN, WITHDRAWN)  # no call goes through until ``open_until``
_BUCKETS = 10  # the failure-ratio window is kept as this many counters, not per call


Listener = Callable[["Breaker", int], None]


class Breaker:
    """One deployment's breaker. ``state`` is ``CLOSED``, ``HALF_OPEN``, ``OPEN`` or
    ``WITHDRAWN`` (open for a long cool-down: the model is gone, see ``withdraw``)."""

    __slots__ = (
        "_bucket_calls",
        "_bucket_failures",
        "_bucket_span",
        "_bucket_start",
        "_clock",
        "_in_flight",
        "_spec",
        "consecutive",
        "listeners",
        "name",
        "open_until",
        "state",
    )

    def __init__(
        self,
        name: str,
        spec: BreakerSpec,
        clock: Clock,
        listeners: list[Listener] | None = None,
    ) -> None:
        self.name = name
        self._spec = spec
        self._clock = clock
        self.state = CLOSED
        self.consecutive = 0
        self.open_until = 0.0
        self._in_flight = 0  # probes out while half-open
        self._bucket_span = spec.window / _BUCKETS
        self._bucket_start = [0.0] * _BUCKETS  # start time of what each counter holds
        self._bucket_calls = [0] * _BUCKETS
        self._bucket_failures = [0] * _BUCKETS
        # Told of every state change (old state as argument); shared with ``Breakers``, so a
        # listener added there reaches breakers created before it.
        self.listeners = listeners if listeners is not None else []

    def _set(self, state: int) -> None:
        old, self.state = self.state, state
        if old != state:
            for listener in self.listeners:
                listener(self, old)

    def available(self) -> bool:
        """Would ``acquire`` succeed now (without taking a probe slot)?"""
        if self.state == CLOSED:
            return True
        if self.state in PAUSED:
            return self._clock.now() >= self.open_until
        return self._in_flight < self._spec.probes

    def acquire(self) -> bool:
        """May a call go to this deployment now? Half-open: takes one of the probe slots."""
        state = self.state
        if state == CLOSED:
            return True
        if state in PAUSED:
            if self._clock.now() < self.open_until:
                return False
            self._set(HALF_OPEN)
            self._in_flight = 0
        if self._in_flight >= self._spec.probes:
            return False
        self._in_flight += 1
        return True

    def success(self) -> None:
        self.consecutive = 0
        if self.state != CLOSED:
            self._in_flight = 0
            self._clear_window()
            self._set(CLOSED)
            return
        self._count(False)

    def failure(self, retry_after: float | None = None) -> None:
        """A failure that says the deployment is unhealthy (``UpstreamError.health``)."""
        self.consecutive += 1
        if self.state == HALF_OPEN:
            self._open(retry_after)
            return
        if self.state in PAUSED:
            # A call let through before the breaker opened came back failed: extend no
            # further than a fresh cool-down would.
            return
        calls, failures = self._count(True)
        spec = self._spec
        if self.consecutive >= spec.failures or (
            calls >= spec.min_calls and failures >= spec.failure_ratio * calls
        ):
            self._open(retry_after)

    def release(self) -> None:
        """A call that ended without a verdict (client left, nothing was sent)."""
        if self.state == HALF_OPEN and self._in_flight > 0:
            self._in_flight -= 1

    def retry_in(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state not in PAUSED:
            return 0.0
        return max(0.0, self.open_until - self._clock.now())

    def withdraw(self, cooldown: float) -> None:
        """The provider says this deployment's model does not exist: out of rotation for
        ``cooldown`` seconds (then one probe, as after any opening)."""
        self.consecutive = 0
        self.open_until = self._clock.now() + cooldown
        self._in_flight = 0
        self._clear_window()
        self._set(WITHDRAWN)

    def _open(self, retry_after: float | None) -> None:
        spec = self._spec
        cooldown = min(spec.max_cooldown, max(spec.cooldown, retry_after or 0.0))
        self.open_until = self._clock.now() + cooldown
        self._in_flight = 0
        self._clear_window()
        self._set(OPEN)

    def _clear_window(self) -> None:
        for i in range(_BUCKETS):
            self._bucket_calls[i] = self._bucket_failures[i] = 0

    def _count(self, failed: bool) -> tuple[int, int]:
        """Add one call to the window; return the calls and failures it now holds."""
        now = self._clock.now()
        span = self._bucket_span
        slot_start = now - now % span
        i = int(now // span) % _BUCKETS
        if self._bucket_start[i] != slot_start:
            self._bucket_start[i] = slot_start
            self._bucket_calls[i] = self._bucket_failures[i] = 0
        self._bucket_calls[i] += 1
        self._bucket_failures[i] += failed
        if not failed:
            return 0, 0  # only a failure can open the breaker: no need to sum
        oldest = slot_start - span * (_BUCKETS - 1)
        calls = failures = 0
        for j in range(_BUCKETS):
            if self._bucket_start[j] >= oldest:
                calls += self._bucket_calls[j]
                failures += self._bucket_failures[j]
        return calls, failures


class Breakers:
    """The breakers of one process, created on first use, keyed by ``provider/model``."""

    __slots__ = ("_all", "_by_model", "_clock", "_spec", "listeners")

    def __init__(
        self,
        spec: BreakerSpec,
        clock: Clock,
        *listeners: Listener,
    ) -> None:
        self._spec = spec
        self._clock = clock
        self._all: dict[str, Breaker] = {}
        # The hot path looks breakers up by model object (configuration lives as long as
        # the process): no key string built per request.
        self._by_model: dict[int, Breaker] = {}
        self.listeners: list[Listener] = list(listeners)  # (breaker, old state) on a change

    def get(self, provider: str, model: str) -> Breaker:
        key = f"{provider}/{model}"
        breaker = self._all.get(key)
        if breaker is None:
            breaker = self._all[key] = Breaker(key, self._spec, self._clock, self.listeners)
        return breaker

    def of(self, model: Model) -> Breaker:
        """The breaker of ``model``'s deployment."""
        breaker = self._by_model.get(id(model))
        if breaker is None:
            breaker = self._by_model[id(model)] = self.get(model.provider.name, model.name)
        return breaker

    def states(self) -> dict[str, str]:
        """``provider/model`` → ``closed`` / ``half_open`` / ``open`` / ``withdrawn``, for the
        ones seen."""
        return {key: STATE_NAMES[b.state] for key, b in sorted(self._all.items())}


__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "PAUSED",
    "STATE_NAMES",
    "WITHDRAWN",
    "Breaker",
    "Breakers",
]
