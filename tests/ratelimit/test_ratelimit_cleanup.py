"""Expired state is forgotten: the memory limiter's sweep and the SQL limiter's row sweep."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ratelimit import UNLIMITED, Limits, MemoryRateLimiter
from gateway.ratelimit.sql_backend import BUCKETS, SqlRateLimiter

if TYPE_CHECKING:
    from tests.ratelimit.conftest import FakeClock

PLAN = Limits(UNLIMITED, UNLIMITED, UNLIMITED)


async def test_memory_forgets_idle_subjects_and_keys(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(clock=clock, lease_seconds=10)
    for n in range(100):
        await limiter.acquire(f"user-{n}", PLAN, 5)  # leaked leases, too
        await limiter.hit(f"login:ip:{n}", 3, 30)
    clock.advance(61)
    await limiter.acquire("user-x", PLAN, 5)  # the first call after a window sweeps
    assert set(limiter._subjects) == {"user-x"}
    assert not limiter._hits


@pytest.fixture(params=["sql-sqlite", "sql-postgres"])
def sql_engine(request: pytest.FixtureRequest) -> AsyncEngine:
    return request.getfixturevalue(
        "sqlite_engine" if request.param == "sql-sqlite" else "postgres_engine")


async def test_sql_sweep_deletes_only_long_expired_rows(
    sql_engine: AsyncEngine, clock: FakeClock, subject: str
) -> None:
    limiter = SqlRateLimiter(sql_engine, clock=clock, lease_seconds=10, sweep_interval=3600)
    await limiter.acquire(subject, PLAN, 5)
    await limiter.hit(f"login:acct:{subject}", 3, 30)
    clock.advance(125)  # past the window, the lease and the sweep's grace
    live = await limiter.acquire(subject + "-live", PLAN, 5)

    assert await limiter.sweep() >= 5  # window, slot and lock rows; hit and its lock row
    async with sql_engine.connect() as conn:
        rows = (await conn.execute(
            sa.select(BUCKETS.c.user_id, BUCKETS.c.bucket_type)
            .where(BUCKETS.c.user_id.like(f"%{subject}%")))).all()
    assert sorted(kind for _, kind in rows) == ["concurrent", "lock", "window"]
    assert {user for user, _ in rows} == {subject + "-live"}
    assert (await limiter.status(subject + "-live", PLAN)).concurrent_in_use == 1
    assert live.lease is not None
    await limiter.aclose()
