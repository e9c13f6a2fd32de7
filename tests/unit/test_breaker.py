"""The circuit breaker's state machine, driven by a hand-moved clock."""

from __future__ import annotations

import pytest
from conftest import FakeClock

from gearshift.config import BreakerSpec
from gearshift.serve.breaker import CLOSED, HALF_OPEN, OPEN, WITHDRAWN, Breaker, Breakers

SPEC = BreakerSpec(
    failures=3, failure_ratio=0.5, min_calls=10, window=10.0, cooldown=5.0, max_cooldown=60.0
)


def make(spec: BreakerSpec = SPEC) -> tuple[Breaker, FakeClock, list[tuple[int, int]]]:
    clock = FakeClock()
    changes: list[tuple[int, int]] = []
    breaker = Breaker("p/m", spec, clock, [lambda b, old: changes.append((old, b.state))])
    return breaker, clock, changes


def test_consecutive_failures_open_it_and_a_success_resets_the_count() -> None:
    b, _, changes = make()
    b.failure()
    b.failure()
    b.success()  # the run is broken
    b.failure()
    b.failure()
    assert b.state == CLOSED
    b.failure()
    assert b.state == OPEN
    assert changes == [(CLOSED, OPEN)]
    assert not b.acquire()
    assert not b.available()


def test_a_failure_ratio_over_the_window_opens_it() -> None:
    b, clock, _ = make(BreakerSpec(failures=100, min_calls=10, failure_ratio=0.5, window=10.0))
    for _ in range(5):  # alternate: never two failures in a row
        b.success()
        b.failure()
        clock.advance(0.1)
    assert b.state == OPEN  # 5 of 10 calls failed


def test_calls_older_than_the_window_do_not_count() -> None:
    b, clock, _ = make(BreakerSpec(failures=100, min_calls=10, failure_ratio=0.5, window=10.0))
    for _ in range(4):
        b.failure()
        b.success()
    clock.advance(11.0)  # those 8 calls are out of the window now
    for _ in range(4):
        b.success()
    b.failure()
    assert b.state == CLOSED  # 1 failure in 5 calls, and too few calls anyway


def test_open_until_the_cooldown_then_half_open_with_limited_probes() -> None:
    b, clock, changes = make()
    for _ in range(3):
        b.failure()
    clock.advance(4.9)
    assert not b.acquire()
    assert b.retry_in() == pytest.approx(0.1)
    clock.advance(0.2)
    assert b.available()
    assert b.acquire()  # the probe
    assert b.state == HALF_OPEN
    assert not b.acquire()  # one probe at a time
    b.release()  # the probe ended without a verdict (the client left)
    assert b.acquire()
    b.success()
    assert b.state == CLOSED
    assert changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]


def test_a_failed_probe_opens_it_again() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.failure()
    clock.advance(5.0)
    assert b.acquire()
    b.failure()
    assert b.state == OPEN
    assert b.retry_in() == pytest.approx(5.0)


def test_the_cooldown_is_at_least_the_retry_after_and_at_most_the_cap() -> None:
    b, _, _ = make()
    for _ in range(3):
        b.failure(retry_after=20.0)
    assert b.retry_in() == pytest.approx(20.0)
    b2, _, _ = make()
    for _ in range(3):
        b2.failure(retry_after=3600.0)
    assert b2.retry_in() == pytest.approx(60.0)


def test_late_failures_of_calls_sent_before_it_opened_do_not_extend_it() -> None:
    b, clock, _ = make()
    for _ in range(3):
        b.failure()
    clock.advance(4.0)
    b.failure()
    assert b.retry_in() == pytest.approx(1.0)


def test_breakers_are_per_deployment() -> None:
    clock = FakeClock()
    breakers = Breakers(SPEC, clock)
    a = breakers.get("openai", "gpt-4o")
    assert breakers.get("openai", "gpt-4o") is a
    assert breakers.get("azure", "gpt-4o") is not a
    for _ in range(3):
        a.failure()
    assert breakers.states() == {"azure/gpt-4o": "closed", "openai/gpt-4o": "open"}


def test_withdrawn_for_its_own_cool_down_then_one_probe() -> None:
    breaker, clock, changes = make()
    breaker.withdraw(900.0)
    assert breaker.state == WITHDRAWN
    assert changes[-1] == (CLOSED, WITHDRAWN)
    assert not breaker.acquire()
    assert breaker.retry_in() == 900.0
    breaker.failure()  # a call let through before it was withdrawn: no change
    assert breaker.state == WITHDRAWN
    clock.advance(899.0)
    assert not breaker.available()
    clock.advance(1.0)
    assert breaker.acquire()
    assert breaker.state == HALF_OPEN
    assert not breaker.acquire(), "one probe at a time"
    breaker.success()
    assert breaker.state == CLOSED
