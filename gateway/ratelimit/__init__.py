"""Plan limits (requests/min, tokens/min, concurrent calls) and login attempt limiting.

Build one limiter in the app's lifespan with :func:`build_limiter`; the semantics every
backend shares are written down in :mod:`gateway.ratelimit.base`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

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
    "LimiterChoice",
    "Limits",
    "MemoryRateLimiter",
    "RateLimiter",
    "RateLimiterUnavailable",
    "Status",
    "WindowState",
    "build_limiter",
    "choose_backend",
]


class LimiterChoice(NamedTuple):
    """The backend to build, why, and a warning when the choice cannot be exact."""

    backend: str
    reason: str
    warning: str | None = None

    def __str__(self) -> str:
        return f"{self.backend} ({self.reason})"


def choose_backend(configured: str, *, redis_url: str | None, workers: int) -> LimiterChoice:
    """Resolve ``auto``: Redis when configured, else memory for one process, else SQL.

    The in-memory limiter counts per process: with several workers and no Redis, ``auto``
    keeps limits exact with the SQL limiter on the gateway's own database.
    """
    if configured != "auto":
        warning = None
        if configured == "memory" and workers > 1:
            warning = (f"the memory rate limiter with {workers} workers: each worker counts "
                       f"alone, so a plan admits up to {workers}x its limits; set "
                       f"GATEWAY_RATE_LIMIT_BACKEND=auto (or sql), or REDIS_URL")
        return LimiterChoice(configured, "configured", warning)
    if redis_url:
        return LimiterChoice("redis", "REDIS_URL is set")
    if workers == 1:
        return LimiterChoice("memory", "1 worker, no REDIS_URL")
    return LimiterChoice("sql", f"{workers} workers, no REDIS_URL")


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

    ``auto`` is resolved by :func:`choose_backend` first, which knows the worker count.

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
    raise ValueError(f"unknown rate limit backend {backend!r}: use memory, redis or sql "
                     f"(resolve auto with choose_backend)")
