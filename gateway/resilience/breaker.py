"""A circuit breaker for one upstream target (provider + upstream model), per process.

Closed: calls go through and consecutive failures are counted. At ``failures`` in a row it
opens: calls are refused (the caller tries another target or fails fast) until
``cooldown`` seconds have passed. Then it is half-open: exactly one call, the probe, is
let through; its success closes the breaker, its failure opens it again for a fresh
cooldown.

Used from one event loop and never awaited inside, so it needs no lock: each method runs
to completion before another call's code can. State is computed from the clock when
asked, so no timer task is needed to move from open to half-open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker with a cooldown and a single half-open probe."""

    __slots__ = ("_clock", "_failures", "_opened_at", "_probe_out", "cooldown", "failures",
                 "opens")

    def __init__(self, failures: int, cooldown: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1:
            raise ValueError("breaker failures must be at least 1")
        if cooldown < 0:
            raise ValueError("breaker cooldown must not be negative")
        self.failures = failures
        self.cooldown = cooldown
        self.opens = 0  # how many times it opened (re-opening after a failed probe counts)
        self._clock = clock
        self._failures = 0  # consecutive failures
        self._opened_at: float | None = None  # None: closed
        self._probe_out = False

    @property
    def state(self) -> State:
        """closed, open (refusing), or half_open (cooldown over: one probe may go)."""
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call use this target now? In half-open, True takes the single probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "open" or self._probe_out:
            return False
        self._probe_out = True
        return True

    def success(self) -> None:
        """The call worked: close, and start counting from zero."""
        self._failures = 0
        self._opened_at = None
        self._probe_out = False

    def failure(self) -> None:
        """The call failed in a way that says the target is unhealthy."""
        self._failures += 1
        state = self.state
        if state == "half_open":
            # The probe failed (or a call let through before the breaker opened failed
            # after the cooldown, which says the same): wait a full cooldown again.
            self._open()
        elif state == "closed" and self._failures >= self.failures:
            self._open()
        # Open within the cooldown: calls admitted before it opened are still failing;
        # counted, but they do not push the probe further away.

    def release(self) -> None:
        """The call ended without a verdict (cancelled, or a 4xx that says nothing about
        health): a probe is handed back so the next call may probe; otherwise nothing
        changes (the consecutive count is kept)."""
        if self._probe_out and self.state == "half_open":
            self._probe_out = False

    def retry_in(self) -> float:
        """Seconds until a probe may go: 0 when closed or the cooldown has passed."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def snapshot(self) -> dict[str, Any]:
        """The breaker's state for /admin/upstreams (JSON-ready)."""
        opened_at = self._opened_at
        return {
            "state": self.state,
            "consecutive_failures": self._failures,
            "failures_to_open": self.failures,
            "cooldown_seconds": self.cooldown,
            "retry_in_seconds": self.retry_in(),
            "opened_for_seconds": None if opened_at is None else self._clock() - opened_at,
            "opens": self.opens,
        }

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probe_out = False
        self.opens += 1
