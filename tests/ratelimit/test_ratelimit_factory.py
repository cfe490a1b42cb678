"""build_limiter and the LeaseRenewer helper."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.ratelimit import (
    UNLIMITED,
    Lease,
    LeaseRenewer,
    Limits,
    MemoryRateLimiter,
    RateLimiter,
    build_limiter,
)
from gateway.ratelimit.redis_backend import RedisRateLimiter
from gateway.ratelimit.sql_backend import SqlRateLimiter

if TYPE_CHECKING:
    from tests.ratelimit.conftest import FakeClock


async def test_build_limiter_picks_the_backend() -> None:
    memory = build_limiter("memory", lease_seconds=30)
    assert isinstance(memory, MemoryRateLimiter) and isinstance(memory, RateLimiter)
    assert memory.lease_seconds == 30

    redis = build_limiter("redis", redis_url="redis://127.0.0.1:1/0", fail_open=False)
    assert isinstance(redis, RedisRateLimiter) and redis.guard.fail_open is False
    await redis.aclose()

    engine = create_async_engine("sqlite+aiosqlite://")
    sql = build_limiter("sql", engine=engine)
    assert isinstance(sql, SqlRateLimiter)
    await engine.dispose()


@pytest.mark.parametrize(("backend", "message"), [
    ("redis", "REDIS_URL"), ("sql", "engine"), ("etcd", "unknown rate limit backend")])
def test_build_limiter_explains_what_is_missing(backend: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_limiter(backend)


async def test_renewer_keeps_held_leases_alive(clock: FakeClock) -> None:
    limiter = MemoryRateLimiter(clock=clock, lease_seconds=10)
    one = Limits(UNLIMITED, UNLIMITED, 1)
    decision = await limiter.acquire("alice", one, 0)
    assert decision.lease is not None
    renewer = LeaseRenewer(limiter, interval=3)
    renewer.hold(decision.lease)
    for _ in range(5):  # 40 s in all, far past the 10 s lease
        clock.advance(8)
        await renewer.renew_now()
    assert (await limiter.acquire("alice", one, 0)).limit_type == "concurrent"

    renewer.drop(decision.lease)
    renewer.drop(decision.lease)
    assert len(renewer) == 0
    clock.advance(11)
    assert (await limiter.acquire("alice", one, 0)).allowed


class CountingLimiter(MemoryRateLimiter):
    """Records each renewal batch; ``renewed`` is set once ``wanted`` batches arrived."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.batches: list[int] = []
        self.renewed = asyncio.Event()
        self._wanted = wanted

    async def renew(self, leases: Iterable[Lease]) -> None:
        self.batches.append(len(list(leases)))
        if len(self.batches) >= self._wanted:
            self.renewed.set()


def renewer_tasks() -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "LeaseRenewer._run"]


async def test_renewer_loop_renews_in_batches_until_closed() -> None:
    limiter = CountingLimiter(wanted=3)
    renewer = LeaseRenewer(limiter, interval=0.01)
    for n in range(3):
        renewer.hold(Lease("alice", f"slot-{n}", 0))
    renewer.start()
    assert len(renewer_tasks()) == 1
    await asyncio.wait_for(limiter.renewed.wait(), 10)
    await renewer.aclose()
    assert set(limiter.batches) == {3}  # every held lease, in one call each time
    # No loop is left to renew anything after close.
    assert renewer_tasks() == []
