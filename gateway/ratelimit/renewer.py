"""Keeps the concurrency leases of this process's running calls alive, in one batch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from gateway.ratelimit.base import Lease, RateLimiter

logger = logging.getLogger("gateway.ratelimit")


class LeaseRenewer:
    """Renews every held lease each ``interval`` seconds with a single ``renew`` call.

    Pick ``interval`` well under the limiter's ``lease_seconds`` (a third is usual), so a
    call that streams for a long time keeps its slot while a crashed process's slots
    lapse. ``hold`` after a successful acquire, ``drop`` before releasing.
    """

    def __init__(self, limiter: RateLimiter, *, interval: float) -> None:
        self._limiter = limiter
        self._interval = interval
        self._held: dict[tuple[str, str], Lease] = {}
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, lease: Lease) -> None:
        """Start renewing ``lease``."""
        self._held[lease.subject, lease.slot_id] = lease

    def drop(self, lease: Lease) -> None:
        """Stop renewing ``lease`` (idempotent)."""
        self._held.pop((lease.subject, lease.slot_id), None)

    def start(self) -> None:
        """Start the background loop (call from the app's lifespan)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def renew_now(self) -> None:
        """Renew every held lease at once."""
        if self._held:
            await self._limiter.renew(list(self._held.values()))

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.renew_now()
            except Exception:  # keep renewing: one failure must not end the loop
                logger.exception("renewing %d rate limit leases failed", len(self._held))

    async def aclose(self) -> None:
        """Stop the background loop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
