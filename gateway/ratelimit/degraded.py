"""What a shared backend answers while it is unreachable: fail open or closed, counted."""

from __future__ import annotations

import logging

from gateway.ratelimit.base import (
    UNAVAILABLE_RETRY_AFTER,
    Decision,
    Lease,
    Limits,
    WindowState,
)

logger = logging.getLogger("gateway.ratelimit")


class BackendGuard:
    """Counts backend failures, logs each outage once, and shapes degraded decisions."""

    def __init__(self, backend: str, *, fail_open: bool) -> None:
        self.backend = backend
        self.fail_open = fail_open
        self.errors = 0
        self.failed_open = 0
        self.failed_closed = 0
        self._healthy = True

    def failed(self, operation: str, exc: BaseException) -> None:
        """Record one failed call; the first of an outage is logged as a warning."""
        self.errors += 1
        if self._healthy:
            self._healthy = False
            logger.warning("%s rate limiter backend failed during %s (%s: %s); failing %s",
                           self.backend, operation, type(exc).__name__, exc,
                           "open" if self.fail_open else "closed")
        else:
            logger.debug("%s rate limiter backend still failing during %s: %r",
                         self.backend, operation, exc)

    def succeeded(self) -> None:
        """Note a working call; logs the end of an outage."""
        if not self._healthy:
            self._healthy = True
            logger.info("%s rate limiter backend reachable again after %d errors",
                           self.backend, self.errors)

    def acquire(self, subject: str, limits: Limits, estimated: int, slot_id: str) -> Decision:
        """The decision given in place of a real one while the backend is down."""
        requests = WindowState(limits.requests_per_minute, limits.requests_per_minute, 0.0)
        tokens = WindowState(limits.tokens_per_minute, limits.tokens_per_minute, 0.0)
        if self.fail_open:
            self.failed_open += 1
            # A real-looking lease keeps the caller's path uniform; releasing it later is
            # harmless because the backend never recorded it.
            return Decision(True, requests, tokens, limits.concurrent_requests, 0,
                            lease=Lease(subject, slot_id, estimated))
        self.failed_closed += 1
        return Decision(False, requests, tokens, limits.concurrent_requests, 0,
                        limit_type="unavailable", retry_after=UNAVAILABLE_RETRY_AFTER)

    def hit(self) -> tuple[bool, float]:
        """The ``hit`` answer while the backend is down."""
        if self.fail_open:
            self.failed_open += 1
            return True, 0.0
        self.failed_closed += 1
        return False, UNAVAILABLE_RETRY_AFTER

    def counters(self) -> dict[str, int]:
        """Counters for metrics: errors seen and degraded answers given."""
        return {"backend_errors": self.errors, "failed_open": self.failed_open,
                "failed_closed": self.failed_closed}
