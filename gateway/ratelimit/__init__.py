"""Plan limits (requests/min, tokens/min, concurrent calls) and login attempt limiting.

Build one limiter in the app's lifespan with :func:`build_limiter`; the semantics every
backend shares are written down in :mod:`gateway.ratelimit.base`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.ratelimit.base import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    UNLIMITED,
    Decision,
    Lease,
    Limits,
    RateLimiter,
    RateLimiterUnavailable,
    Status,
    WindowState,
)
from gateway.ratelimit.memory import MemoryRateLimiter
from gateway.ratelimit.renewer import LeaseRenewer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "DEFAULT_LEASE_SECONDS",
    "DEFAULT_WINDOW_SECONDS",
    "UNLIMITED",
    "Decision",
    "Lease",
    "LeaseRenewer",
    "Limits",
    "MemoryRateLimiter",
    "RateLimiter",
    "RateLimiterUnavailable",
    "Status",
    "WindowState",
    "build_limiter",
]


def build_limiter(
    backend: str,
    *,
    redis_url: str | None = None,
    engine: AsyncEngine | None = None,
    fail_open: bool = True,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
) -> RateLimiter:
    """Build the limiter named by ``backend``: ``memory``, ``redis`` or ``sql``.

    ``fail_open`` applies to the shared backends only: when Redis or the database is
    unreachable, allow calls (True) or reject them with ``limit_type="unavailable"``.
    """
    if backend == "memory":
        return MemoryRateLimiter(lease_seconds=lease_seconds, window_seconds=window_seconds)
    if backend == "redis":
        if not redis_url:
            raise ValueError("the redis rate limiter needs a URL: set REDIS_URL")
        from gateway.ratelimit.redis_backend import RedisRateLimiter

        return RedisRateLimiter.from_url(redis_url, fail_open=fail_open,
                                         lease_seconds=lease_seconds,
                                         window_seconds=window_seconds)
    if backend == "sql":
        if engine is None:
            raise ValueError("the sql rate limiter needs the database engine")
        from gateway.ratelimit.sql_backend import SqlRateLimiter

        return SqlRateLimiter(engine, fail_open=fail_open, lease_seconds=lease_seconds,
                              window_seconds=window_seconds)
    raise ValueError(f"unknown rate limit backend {backend!r}: use memory, redis or sql")
