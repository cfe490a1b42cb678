"""A separate gateway process for the cross-process exactness test.

Usage: python acquire_worker.py {redis|sql} URL KEY_PREFIX SUBJECT COUNT LIMIT
Prints ``ready``, waits for a line on stdin (so every worker starts together), fires
COUNT concurrent acquires against a requests-per-minute limit of LIMIT, and prints how
many were admitted.
"""

from __future__ import annotations

import asyncio
import sys

from gateway.ratelimit import UNLIMITED, Limits, RateLimiter


async def main(backend: str, url: str, prefix: str, subject: str, count: int,
               limit: int) -> None:
    limiter: RateLimiter
    if backend == "redis":
        from gateway.ratelimit.redis_backend import RedisRateLimiter

        limiter = RedisRateLimiter.from_url(url, key_prefix=prefix, socket_timeout=5.0)
    else:
        from sqlalchemy.ext.asyncio import create_async_engine

        from gateway.ratelimit.sql_backend import SqlRateLimiter
        from storage.engine import build_engine

        if url.startswith("sqlite"):  # the gateway's own setup: WAL, busy timeout
            engine = build_engine(url)
        else:
            engine = create_async_engine(url, pool_size=count, max_overflow=0)
        limiter = SqlRateLimiter(engine)
    plan = Limits(requests_per_minute=limit, tokens_per_minute=UNLIMITED,
                  concurrent_requests=UNLIMITED)
    # Open the connections first so that the workers race on the limit, not on connecting.
    await asyncio.gather(*(limiter.status(subject, plan) for _ in range(count)))
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    decisions = await asyncio.gather(*(limiter.acquire(subject, plan, 1) for _ in range(count)))
    errors = getattr(limiter, "backend_errors", 0)
    print(sum(d.allowed for d in decisions), errors, flush=True)
    await limiter.aclose()
    if backend != "redis":
        await engine.dispose()


if __name__ == "__main__":
    backend, url, prefix, subject, count, limit = sys.argv[1:7]
    asyncio.run(main(backend, url, prefix, subject, int(count), int(limit)))
