"""Redis limiter: one atomic Lua script per call, shared by every gateway process.

Connection failures never escape ``acquire``/``release``/``renew``/``hit``: they are
counted (``backend_errors``), logged once per outage, and answered by the ``fail_open``
policy. ``status`` raises :class:`RateLimiterUnavailable` instead of inventing numbers.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gateway.ratelimit import policy, redis_scripts
from gateway.ratelimit.base import (
    CONCURRENT_RETRY_AFTER,
    DEFAULT_LEASE_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Decision,
    Lease,
    Limits,
    RateLimiterUnavailable,
    Status,
    WindowState,
)
from gateway.ratelimit.degraded import BackendGuard

# What "Redis is unreachable" looks like; anything else (a script bug) is raised.
UNREACHABLE: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.ReadOnlyError,
    OSError,
    asyncio.TimeoutError,
)

_RENEW_BATCH = 1000


class RedisRateLimiter:
    """Sliding-log limiter kept in Redis; exact across processes sharing the server."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        fail_open: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        key_prefix: str = "ratelimit",
        clock: Callable[[], float] | None = None,
        owns_client: bool = False,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.window_seconds = window_seconds
        self.guard = BackendGuard("redis", fail_open=fail_open)
        self._client = client
        self._owns_client = owns_client
        self._prefix = key_prefix
        self._clock = clock  # None: Redis TIME, the clock all processes share
        self._slot_prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = itertools.count()
        self._acquire = client.register_script(redis_scripts.ACQUIRE)
        self._release = client.register_script(redis_scripts.RELEASE)
        self._renew = client.register_script(redis_scripts.RENEW)
        self._status = client.register_script(redis_scripts.STATUS)
        self._hit = client.register_script(redis_scripts.HIT)

    @classmethod
    def from_url(cls, url: str, *, socket_timeout: float = 0.5, **kwargs: Any) -> RedisRateLimiter:
        """Connect lazily to ``url``; fail fast (no retries) so an outage costs little."""
        client = aioredis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # A retried EVALSHA could run twice; a stale pooled connection is detected
            # when checked out anyway.
            retry=Retry(NoBackoff(), 0),
        )
        return cls(client, owns_client=True, **kwargs)

    @property
    def client(self) -> aioredis.Redis:
        """The connection pool, shared with the spend ledger (gateway/ratelimit/spend_redis.py)
        so that an outage either of them sees drops the stale connections of both."""
        return self._client

    @property
    def backend_errors(self) -> int:
        """Backend calls that failed (connection refused, timeout...)."""
        return self.guard.errors

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def _keys(self, subject: str) -> list[str]:
        base = f"{self._prefix}:{{{subject}}}:"
        return [base + "r", base + "t", base + "a", base + "c"]

    async def acquire(self, subject: str, limits: Limits, estimated_tokens: int) -> Decision:
        """Take a slot, count a request and reserve tokens, all or nothing."""
        estimated = max(0, int(estimated_tokens))
        slot_id = f"{self._slot_prefix}{next(self._ids)}"
        args = (self._now(), self.window_seconds, self.lease_seconds,
                limits.requests_per_minute, limits.tokens_per_minute,
                limits.concurrent_requests, estimated, slot_id, CONCURRENT_RETRY_AFTER)
        try:
            reply = await self._acquire(keys=self._keys(subject), args=args)
        except UNREACHABLE as exc:
            self.guard.failed("acquire", exc)
            return self.guard.acquire(subject, limits, estimated, slot_id)
        self.guard.succeeded()
        allowed, verdict, retry, in_use, nreq, used, requests_reset, tokens_reset = reply
        requests = WindowState(limits.requests_per_minute,
                               max(0, limits.requests_per_minute - int(nreq)),
                               float(requests_reset))
        tokens = WindowState(limits.tokens_per_minute,
                             max(0, limits.tokens_per_minute - int(used)), float(tokens_reset))
        if allowed:
            return policy.admitted(limits, requests, tokens, int(in_use),
                                   Lease(subject, slot_id, estimated))
        verdict = verdict.decode()
        if verdict == "too_large":
            return policy.too_large(limits, estimated, requests, tokens, int(in_use),
                                    self.window_seconds)
        return policy.rejected(limits, verdict, float(retry), requests, tokens, int(in_use))

    async def release(self, lease: Lease, actual_tokens: int) -> None:
        """Free the slot and settle the reservation with the real usage; idempotent."""
        _, t, a, c = self._keys(lease.subject)
        args = (self._now(), self.window_seconds, lease.slot_id,
                max(0, int(actual_tokens)), lease.reserved_tokens)
        try:
            await self._release(keys=[t, a, c], args=args)
        except UNREACHABLE as exc:
            # The slot's lease will lapse on its own; tokens stay charged at the estimate.
            self.guard.failed("release", exc)
            return
        self.guard.succeeded()

    async def renew(self, leases: Iterable[Lease]) -> None:
        """Extend still-held leases, in one round trip per thousand."""
        batch = [(self._keys(lease.subject)[3], lease.slot_id) for lease in leases]
        for start in range(0, len(batch), _RENEW_BATCH):
            chunk = batch[start:start + _RENEW_BATCH]
            try:
                await self._renew(keys=[key for key, _ in chunk],
                                  args=[self._now(), self.lease_seconds,
                                        *(slot for _, slot in chunk)])
            except UNREACHABLE as exc:
                self.guard.failed("renew", exc)
                return
            self.guard.succeeded()

    async def status(self, subject: str, limits: Limits) -> Status:
        """Report usage and in-flight calls without consuming anything."""
        try:
            reply = await self._status(keys=self._keys(subject), args=[self._now()])
        except UNREACHABLE as exc:
            self.guard.failed("status", exc)
            raise RateLimiterUnavailable("the Redis rate limiter is unreachable") from exc
        self.guard.succeeded()
        in_use, nreq, used, requests_reset, tokens_reset = reply
        return Status(
            WindowState(limits.requests_per_minute,
                        max(0, limits.requests_per_minute - int(nreq)), float(requests_reset)),
            WindowState(limits.tokens_per_minute,
                        max(0, limits.tokens_per_minute - int(used)), float(tokens_reset)),
            limits.concurrent_requests, int(in_use))

    async def hit(self, key: str, limit: int, window_seconds: float) -> tuple[bool, float]:
        """Count one attempt against ``limit`` per sliding window; (allowed, retry_after)."""
        member = f"{self._slot_prefix}{next(self._ids)}"
        try:
            allowed, retry = await self._hit(
                keys=[f"{self._prefix}:hit:{{{key}}}"],
                args=[self._now(), window_seconds, limit, member])
        except UNREACHABLE as exc:
            self.guard.failed("hit", exc)
            return self.guard.hit()
        self.guard.succeeded()
        return bool(allowed), float(retry)

    async def aclose(self) -> None:
        """Close the connection pool if this limiter created it."""
        if self._owns_client:
            await self._client.aclose()
