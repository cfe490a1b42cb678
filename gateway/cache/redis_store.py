"""The shared cache store: one Redis for every instance, entries expiring by ``PX``.

Redis trouble never fails a call: a read that errs or is slow is a miss, a write that
errs is dropped, and it is logged once per episode (then once when Redis is back). While
it is down, one call a second tries it; the others skip it at once rather than each
waiting for the timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("gateway")

# A cache that takes longer than this to answer costs more than it saves: the call goes
# to the upstream instead (Redis normally answers in well under a millisecond).
TIMEOUT_SECONDS = 0.5
RETRY_SECONDS = 1.0


class RedisStore:
    """Entries in ``redis`` (the app's shared client; closed by the lifespan, not here)."""

    def __init__(self, redis: Redis, *, timeout: float = TIMEOUT_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._redis = redis
        self._timeout = timeout
        self._clock = clock
        self._retry_at = 0.0
        self.down = False

    def _skip(self) -> bool:
        """Down, and not yet time for the next try."""
        return self.down and self._clock() < self._retry_at

    def _failed(self, exc: BaseException) -> None:
        self._retry_at = self._clock() + RETRY_SECONDS
        if not self.down:
            self.down = True
            log.warning("response cache: Redis unavailable (%s: %s); calls go to their "
                        "upstream until it is back", type(exc).__name__, exc)

    def _ok(self) -> None:
        if self.down:
            self.down = False
            log.warning("response cache: Redis is back")

    async def get(self, key: str) -> bytes | None:
        if self._skip():
            return None
        try:
            with anyio.fail_after(self._timeout):
                value = await self._redis.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None
        self._ok()
        return value

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        if self._skip():
            return
        try:
            with anyio.fail_after(self._timeout):
                await self._redis.set(key, value, px=max(1, round(ttl * 1000)))
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return
        self._ok()

    async def aclose(self) -> None:
        """Nothing of its own to close: the client is the app's."""
