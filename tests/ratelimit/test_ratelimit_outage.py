"""Shared backends going away: fail open or closed, count it, never raise, then recover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.ratelimit import Limits, RateLimiterUnavailable
from gateway.ratelimit.redis_backend import RedisRateLimiter
from gateway.ratelimit.sql_backend import SqlRateLimiter
from tests.processes import RedisProcess, free_port

PLAN = Limits(requests_per_minute=5, tokens_per_minute=1000, concurrent_requests=2)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    yield server
    server.stop()


async def test_redis_outage_fails_open_or_closed_and_recovers(
    redis_process: RedisProcess,
) -> None:
    prefix = f"rltest-{uuid.uuid4().hex[:10]}"
    lenient = RedisRateLimiter.from_url(redis_process.url, fail_open=True, key_prefix=prefix)
    strict = RedisRateLimiter.from_url(redis_process.url, fail_open=False, key_prefix=prefix)
    try:
        before = await lenient.acquire("alice", PLAN, 10)
        assert before.allowed and before.lease is not None
        assert (await strict.acquire("bob", PLAN, 10)).allowed

        redis_process.stop()
        started = time.monotonic()
        opened = await lenient.acquire("alice", PLAN, 10)
        assert opened.allowed and opened.lease is not None and lenient.backend_errors == 1
        closed = await strict.acquire("bob", PLAN, 10)
        assert (closed.allowed, closed.limit_type, closed.lease) == (False, "unavailable", None)
        assert closed.retry_after > 0 and strict.backend_errors == 1

        # Nothing raises out of the hot path, and every failure is counted.
        await lenient.release(before.lease, 5)
        await lenient.release(opened.lease, 5)
        await lenient.renew([before.lease, opened.lease])
        assert await lenient.hit("login:ip:1", 3, 60) == (True, 0.0)
        assert (await strict.hit("login:ip:1", 3, 60))[0] is False
        assert lenient.guard.counters() == {"backend_errors": 5, "failed_open": 2,
                                            "failed_closed": 0}
        assert strict.guard.counters() == {"backend_errors": 2, "failed_open": 0,
                                           "failed_closed": 2}
        with pytest.raises(RateLimiterUnavailable):
            await lenient.status("alice", PLAN)
        assert time.monotonic() - started < 5  # failing is fast, not a hang

        redis_process.start()  # an empty Redis: the scripts must be loaded again
        after = await strict.acquire("bob", PLAN, 10)
        assert after.allowed and after.limit_type is None
        assert after.concurrent_in_use == 1
        assert (await lenient.status("alice", PLAN)).concurrent_in_use == 0
        assert strict.backend_errors == 2
    finally:
        await lenient.aclose()
        await strict.aclose()


@pytest.mark.parametrize("fail_open", [True, False])
async def test_sql_database_down_follows_the_fail_open_policy(fail_open: bool) -> None:
    engine = create_async_engine(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/none",
        connect_args={"timeout": 2})
    limiter = SqlRateLimiter(engine, fail_open=fail_open)
    try:
        decision = await limiter.acquire("alice", PLAN, 10)
        assert decision.allowed is fail_open
        assert decision.limit_type == (None if fail_open else "unavailable")
        if decision.lease is not None:
            await limiter.release(decision.lease, 10)
        assert (await limiter.hit("login:ip:1", 3, 60))[0] is fail_open
        with pytest.raises(RateLimiterUnavailable):
            await limiter.status("alice", PLAN)
        assert limiter.backend_errors >= 3
    finally:
        await limiter.aclose()
        await engine.dispose()


async def test_fail_open_is_cheap_enough_to_keep_serving() -> None:
    limiter = RedisRateLimiter.from_url(f"redis://127.0.0.1:{free_port()}/0")
    try:
        decisions = await asyncio.gather(*(limiter.acquire("u", PLAN, 1) for _ in range(20)))
        assert all(d.allowed for d in decisions)
        assert limiter.backend_errors == 20
    finally:
        await limiter.aclose()
