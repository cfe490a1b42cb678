"""The rate limiter contract: plan limits in, decisions out, the same for every backend.

Semantics shared by all backends (``memory``, ``redis``, ``sql``):

- Requests and tokens are counted in a *sliding log* over the last ``window_seconds``
  (60 by default): an admitted call stays in the window for exactly that long, so no
  window of that length ever holds more than the limit (no 2x burst at a boundary).
- Check order in :meth:`RateLimiter.acquire`: a request whose token estimate alone is
  larger than the whole tokens-per-minute limit is rejected first (``tokens``, with a
  ``message``; waiting will not help). Then ``concurrent``, ``requests``, ``tokens``: the
  first limit that would be exceeded is reported and nothing at all is consumed.
- Limits are plain ints. There is no "unlimited" sentinel: use a very large value
  (:data:`UNLIMITED`). A limit of 0 admits nothing.
- ``WindowState.reset_seconds`` is the time until the window is back to its initial
  state (usage 0), OpenAI's meaning of ``x-ratelimit-reset-*``; 0 when already empty.
  ``Decision.retry_after`` on a rejection is the time until *this* call would fit.
- A concurrency slot is a lease of ``lease_seconds``; a slot not released nor renewed
  within that time is reclaimed by the next ``acquire`` for the same subject.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

UNLIMITED = 1_000_000_000
"""A limit value that is never reached in practice."""

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_LEASE_SECONDS = 300.0
CONCURRENT_RETRY_AFTER = 1.0
"""Suggested wait after a ``concurrent`` rejection: a slot frees when some call ends."""
UNAVAILABLE_RETRY_AFTER = 1.0
"""Suggested wait after an ``unavailable`` rejection (backend down, failing closed)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of one subject (the caller's plan, possibly tightened per API key)."""

    requests_per_minute: int
    tokens_per_minute: int
    concurrent_requests: int


@dataclass(frozen=True, slots=True)
class WindowState:
    """One sliding window as the ``x-ratelimit-*`` headers show it."""

    limit: int
    remaining: int
    reset_seconds: float


@dataclass(frozen=True, slots=True)
class Lease:
    """A held concurrency slot plus the tokens reserved for it; give it back to ``release``."""

    subject: str
    slot_id: str
    reserved_tokens: int


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one ``acquire``; ``lease`` is set exactly when ``allowed``."""

    allowed: bool
    requests: WindowState
    tokens: WindowState
    concurrent_limit: int
    concurrent_in_use: int
    limit_type: str | None = None  # "requests" | "tokens" | "concurrent" | "unavailable"
    retry_after: float = 0.0
    lease: Lease | None = None
    message: str | None = None  # a human hint, e.g. for a request larger than the limit


@dataclass(frozen=True, slots=True)
class Status:
    """Current usage of one subject, read without consuming anything."""

    requests: WindowState
    tokens: WindowState
    concurrent_limit: int
    concurrent_in_use: int


class RateLimiterUnavailable(Exception):
    """The limiter's backend cannot be reached (raised by ``status`` only)."""


@runtime_checkable
class RateLimiter(Protocol):
    """Plan limits enforced per subject, exact across every process sharing the backend."""

    async def acquire(self, subject: str, limits: Limits, estimated_tokens: int) -> Decision:
        """Take a slot, count a request and reserve tokens, all or nothing."""
        ...

    async def release(self, lease: Lease, actual_tokens: int) -> None:
        """Free the slot and settle the reservation with the real usage; idempotent."""
        ...

    async def renew(self, leases: Iterable[Lease]) -> None:
        """Extend the leases of calls still running in this process, in one batch."""
        ...

    async def status(self, subject: str, limits: Limits) -> Status:
        """Report usage and in-flight calls without consuming anything."""
        ...

    async def hit(self, key: str, limit: int, window_seconds: float) -> tuple[bool, float]:
        """Count one attempt against ``limit`` per sliding window; (allowed, retry_after)."""
        ...

    async def aclose(self) -> None:
        """Release connections held by the limiter."""
        ...
