"""CircuitBreaker against an injected clock: no sleeps, every transition at an exact time."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from gateway.resilience.breaker import CircuitBreaker


class Clock:
    """A monotonic clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def opened(clock: Clock, failures: int = 3, cooldown: float = 30) -> CircuitBreaker:
    breaker = CircuitBreaker(failures, cooldown, clock)
    for _ in range(failures):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "open"
    return breaker


def test_a_new_breaker_is_closed_and_lets_calls_through(clock) -> None:
    breaker = CircuitBreaker(3, 30, clock)
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(100))
    assert breaker.retry_in() == 0


def test_it_opens_after_n_consecutive_failures(clock) -> None:
    breaker = CircuitBreaker(3, 30, clock)
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.snapshot()["opens"] == 1


def test_a_success_in_between_resets_the_count(clock) -> None:
    breaker = CircuitBreaker(3, 30, clock)
    for _ in range(5):
        breaker.failure()
        breaker.failure()
        breaker.success()
    assert breaker.state == "closed"
    assert breaker.snapshot()["consecutive_failures"] == 0
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"  # two in a row, not seven


def test_release_neither_resets_nor_counts_while_closed(clock) -> None:
    """A 4xx or a cancelled call says nothing about health: the run of failures goes on."""
    breaker = CircuitBreaker(3, 30, clock)
    breaker.failure()
    breaker.failure()
    breaker.release()
    assert breaker.snapshot()["consecutive_failures"] == 2
    breaker.failure()
    assert breaker.state == "open"


def test_open_fails_fast_until_the_cooldown_has_passed(clock) -> None:
    breaker = opened(clock, cooldown=30)
    assert breaker.retry_in() == 30
    clock.advance(29.5)
    assert breaker.state == "open"
    assert not any(breaker.allow() for _ in range(10))
    assert breaker.retry_in() == pytest.approx(0.5)
    clock.advance(0.5)
    assert breaker.state == "half_open"
    assert breaker.retry_in() == 0


async def test_exactly_one_probe_after_the_cooldown_among_concurrent_calls(clock) -> None:
    """Fifty calls, as tasks started in the same loop turn, arrive once the cooldown has
    passed: one probes, the rest are refused while the probe is out."""
    breaker = opened(clock)
    clock.advance(30)

    async def call() -> bool:
        return breaker.allow()

    granted = await asyncio.gather(*(asyncio.create_task(call()) for _ in range(50)))
    assert granted.count(True) == 1
    assert breaker.state == "half_open"
    clock.advance(3600)  # however long the probe takes, no second one goes meanwhile
    assert not breaker.allow()


def test_a_successful_probe_closes_it(clock) -> None:
    breaker = opened(clock)
    clock.advance(30)
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert all(breaker.allow() for _ in range(10))
    snapshot = breaker.snapshot()
    assert (snapshot["consecutive_failures"], snapshot["opened_for_seconds"]) == (0, None)
    breaker.failure()
    breaker.failure()
    assert breaker.state == "closed"  # counting starts again from zero


def test_a_failed_probe_reopens_with_a_fresh_cooldown(clock) -> None:
    breaker = opened(clock, cooldown=30)
    clock.advance(45)
    assert breaker.allow()
    clock.advance(2)  # the probe took 2 s to fail
    breaker.failure()
    assert breaker.state == "open"
    assert breaker.retry_in() == 30  # from the probe's failure, not the first opening
    assert not breaker.allow()
    clock.advance(29.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()  # the next probe
    assert breaker.snapshot()["opens"] == 2


def test_release_hands_the_probe_back(clock) -> None:
    breaker = opened(clock)
    clock.advance(30)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()  # the probe was cancelled, or got a 400: no verdict
    assert breaker.state == "half_open"
    assert breaker.allow()  # the next call probes
    assert not breaker.allow()


def test_release_while_open_changes_nothing(clock) -> None:
    breaker = opened(clock)
    breaker.release()
    assert breaker.state == "open" and not breaker.allow()
    assert breaker.retry_in() == 30


def test_late_failures_while_open_do_not_push_the_probe_back(clock) -> None:
    """Calls admitted before it opened may fail during the cooldown: counted, but the
    probe is still due when the first cooldown ends."""
    breaker = opened(clock, cooldown=30)
    clock.advance(10)
    breaker.failure()
    breaker.failure()
    assert breaker.retry_in() == 20
    assert breaker.snapshot()["consecutive_failures"] == 5
    assert breaker.snapshot()["opens"] == 1


def test_snapshot_is_json_ready(clock) -> None:
    breaker = CircuitBreaker(2, 30, clock)
    assert breaker.snapshot() == {
        "state": "closed", "consecutive_failures": 0, "failures_to_open": 2,
        "cooldown_seconds": 30, "retry_in_seconds": 0.0, "opened_for_seconds": None,
        "opens": 0}
    breaker.failure()
    breaker.failure()
    clock.advance(12)
    snapshot = orjson.loads(orjson.dumps(breaker.snapshot()))
    assert snapshot == {
        "state": "open", "consecutive_failures": 2, "failures_to_open": 2,
        "cooldown_seconds": 30, "retry_in_seconds": 18.0, "opened_for_seconds": 12.0,
        "opens": 1}
    clock.advance(18)
    assert breaker.snapshot()["state"] == "half_open"


def test_the_default_clock_is_monotonic() -> None:
    breaker = CircuitBreaker(1, 60)
    breaker.failure()
    assert breaker.state == "open"
    assert 59 < breaker.retry_in() <= 60


@pytest.mark.parametrize(("failures", "cooldown"), [(0, 30), (-1, 30), (3, -1)])
def test_nonsense_settings_are_refused(failures: int, cooldown: float) -> None:
    with pytest.raises(ValueError, match="breaker"):
        CircuitBreaker(failures, cooldown)
