"""In-process limiter: the embedded default, exact within one process and a few µs a call.

No locks: every method runs to completion without awaiting, so asyncio's single thread
makes each one atomic.
"""

from __future__ import annotations

import itertools
import math
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable

from gateway.ratelimit import policy
from gateway.ratelimit.base import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Decision,
    Lease,
    Limits,
    Status,
    WindowState,
)


class _Usage:
    """One subject's sliding log and slots; every time stored is an expiry."""

    __slots__ = ("entries", "requests", "slot_floor", "slots", "token_sum", "tokens")

    def __init__(self) -> None:
        self.requests: deque[float] = deque()  # expiries of admitted requests
        self.tokens: deque[list] = deque()  # [expiry, tokens, entry_id], in expiry order
        self.entries: dict[str, list] = {}  # entry_id -> the same list, for settling
        self.token_sum = 0
        self.slots: dict[str, float] = {}  # slot_id -> lease expiry
        self.slot_floor = math.inf  # no slot expires before this

    def prune(self, now: float) -> None:
        requests = self.requests
        while requests and requests[0] <= now:
            requests.popleft()
        tokens = self.tokens
        while tokens and tokens[0][0] <= now:
            _, amount, entry_id = tokens.popleft()
            self.token_sum -= amount
            del self.entries[entry_id]
        if self.slot_floor <= now:
            slots = self.slots
            for slot_id in [s for s, expiry in slots.items() if expiry <= now]:
                del slots[slot_id]
            self.slot_floor = min(slots.values(), default=math.inf)

    def add_tokens(self, expiry: float, amount: int, entry_id: str) -> None:
        entry = [expiry, amount, entry_id]
        self.tokens.append(entry)
        self.entries[entry_id] = entry
        self.token_sum += amount

    def is_empty(self) -> bool:
        return not (self.requests or self.tokens or self.slots)

    def windows(self, limits: Limits, now: float) -> tuple[WindowState, WindowState]:
        newest_request = self.requests[-1] if self.requests else None
        newest_tokens = self.tokens[-1][0] if self.tokens else None
        return (policy.window_state(limits.requests_per_minute, len(self.requests),
                                    newest_request, now),
                policy.window_state(limits.tokens_per_minute, self.token_sum,
                                    newest_tokens, now))


class MemoryRateLimiter:
    """Sliding-log limiter kept in this process's memory."""

    def __init__(
        self,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.window_seconds = window_seconds
        self.backend_errors = 0  # never anything else: kept for a uniform metrics view
        self._clock = clock
        self._subjects: dict[str, _Usage] = {}
        self._hits: dict[str, deque[float]] = {}
        self._prefix = uuid.uuid4().hex[:8] + "-"
        self._ids = itertools.count()
        self._next_sweep = clock() + window_seconds

    async def acquire(self, subject: str, limits: Limits, estimated_tokens: int) -> Decision:
        """Take a slot, count a request and reserve tokens, all or nothing."""
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        usage = self._subjects.get(subject)
        if usage is None:
            usage = self._subjects[subject] = _Usage()
        else:
            usage.prune(now)
        estimated = max(0, int(estimated_tokens))
        in_use = len(usage.slots)
        requests_used = len(usage.requests)
        tokens_used = usage.token_sum
        window = self.window_seconds
        if estimated <= limits.tokens_per_minute:
            verdict = policy.first_exceeded(limits, estimated, in_use, requests_used,
                                            tokens_used)
            if verdict is None:
                return self._admit(usage, subject, limits, estimated, now)
        else:
            verdict = "too_large"
        requests, tokens = usage.windows(limits, now)
        if verdict == "too_large":
            return policy.too_large(limits, estimated, requests, tokens, in_use, window)
        if verdict == "concurrent":
            return policy.concurrent_rejection(limits, requests, tokens, in_use)
        if verdict == "requests":
            oldest = usage.requests[0] if usage.requests else None
            retry = policy.requests_retry_after(oldest, now, window)
        else:
            retry = policy.tokens_retry_after(
                ((e[0], e[1]) for e in usage.tokens), tokens_used, estimated,
                limits.tokens_per_minute, now, window)
        return policy.rejected(limits, verdict, retry, requests, tokens, in_use)

    def _admit(self, usage: _Usage, subject: str, limits: Limits, estimated: int,
               now: float) -> Decision:
        slot_id = f"{self._prefix}{next(self._ids)}"
        expiry = now + self.window_seconds
        usage.requests.append(expiry)
        usage.add_tokens(expiry, estimated, slot_id)
        lease_expiry = now + self.lease_seconds
        usage.slots[slot_id] = lease_expiry
        if lease_expiry < usage.slot_floor:
            usage.slot_floor = lease_expiry
        requests, tokens = usage.windows(limits, now)
        return policy.admitted(limits, requests, tokens, len(usage.slots),
                               Lease(subject, slot_id, estimated))

    async def release(self, lease: Lease, actual_tokens: int) -> None:
        """Free the slot and settle the reservation with the real usage; idempotent."""
        usage = self._subjects.get(lease.subject)
        if usage is None:
            return
        now = self._clock()
        held = usage.slots.pop(lease.slot_id, None) is not None
        actual = max(0, int(actual_tokens))
        entry = usage.entries.get(lease.slot_id)
        if entry is not None and entry[0] > now:
            # Setting (not adding) the amount is what makes a second release harmless.
            usage.token_sum += actual - entry[1]
            entry[1] = actual
        elif held and actual > lease.reserved_tokens:
            # The call outlived the window: charge what it used beyond its estimate now.
            excess_id = lease.slot_id + ":x"
            if excess_id not in usage.entries:
                usage.add_tokens(now + self.window_seconds, actual - lease.reserved_tokens,
                                 excess_id)

    async def renew(self, leases: Iterable[Lease]) -> None:
        """Extend still-held leases; a slot already reclaimed is not brought back."""
        now = self._clock()
        expiry = now + self.lease_seconds
        for lease in leases:
            usage = self._subjects.get(lease.subject)
            if usage is None:
                continue
            current = usage.slots.get(lease.slot_id)
            if current is not None and current > now:
                usage.slots[lease.slot_id] = expiry

    async def status(self, subject: str, limits: Limits) -> Status:
        """Report usage and in-flight calls without consuming anything."""
        now = self._clock()
        usage = self._subjects.get(subject)
        if usage is None:
            usage = _Usage()
        else:
            usage.prune(now)
        requests, tokens = usage.windows(limits, now)
        return Status(requests, tokens, limits.concurrent_requests, len(usage.slots))

    async def hit(self, key: str, limit: int, window_seconds: float) -> tuple[bool, float]:
        """Count one attempt against ``limit`` per sliding window; (allowed, retry_after)."""
        now = self._clock()
        log = self._hits.get(key)
        if log is None:
            log = self._hits[key] = deque()
        while log and log[0] <= now:
            log.popleft()
        if len(log) < limit:
            log.append(now + window_seconds)
            return True, 0.0
        return False, (log[0] - now) if log else window_seconds

    async def aclose(self) -> None:
        """Nothing to close; state is dropped."""
        self._subjects.clear()
        self._hits.clear()

    def _sweep(self, now: float) -> None:
        """Forget subjects and keys with nothing left in their windows."""
        self._next_sweep = now + self.window_seconds
        for subject in list(self._subjects):
            usage = self._subjects[subject]
            usage.prune(now)
            if usage.is_empty():
                del self._subjects[subject]
        for key in list(self._hits):
            log = self._hits[key]
            while log and log[0] <= now:
                log.popleft()
            if not log:
                del self._hits[key]
