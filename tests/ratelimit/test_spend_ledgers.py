"""The spend ledgers (memory, Redis, SQL) against one contract, on an injected wall clock:
admit-while-below, exact integer settlement under concurrency, UTC periods, seeding once;
and a Redis that goes away fails open or closed without raising."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from gateway.ratelimit import RateLimiterUnavailable
from gateway.ratelimit.spend import Budget, SpendLedger, Window, build_ledger, to_nano, window_of
from gateway.ratelimit.spend_redis import RedisSpendLedger
from storage.models import RateLimitBucket
from tests.conftest import REDIS_URL, skip_or_fail
from tests.processes import RedisProcess

CALL = to_nano(0.015)


class WallClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Seeds:
    """A seeder that answers a fixed stored spend and counts how often it is asked."""

    def __init__(self, nano: int = 0) -> None:
        self.nano = nano
        self.asked: list[tuple[str, str]] = []

    async def __call__(self, budget: Budget, window: Window) -> int:
        self.asked.append((budget.owner, window.key))
        return self.nano


def budget(period: str = "month", usd: float = 0.04) -> Budget:
    return Budget("key", "ci", str(uuid.uuid4()), str(uuid.uuid4()), period, to_nano(usd))


@pytest.fixture(params=["memory", "redis", "sql-sqlite"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator:
    """``make(seeds, clock)`` builds a ledger of the parametrised backend."""
    closers = []
    engine = None
    if request.param == "sql-sqlite":
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'spend.db'}")
        async with engine.begin() as conn:
            await conn.run_sync(RateLimitBucket.__table__.create)  # type: ignore[attr-defined]
        closers.append(engine.dispose)
    client = None
    if request.param == "redis":
        if not REDIS_URL:
            skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
        from redis.asyncio import Redis

        client = Redis.from_url(REDIS_URL)
        closers.append(client.aclose)
    backend = request.param.split("-")[0]

    def build(seeds: Seeds, clock: WallClock) -> SpendLedger:
        return build_ledger(backend, seeder=seeds, redis=client, engine=engine, clock=clock)

    yield build
    for close in closers:
        await close()


async def test_admits_while_below_and_settles_exactly(make) -> None:  # type: ignore[no-untyped-def]
    clock = WallClock(datetime(2026, 11, 30, 12, tzinfo=UTC))
    ledger = make(Seeds(), clock)
    b = budget()
    decisions = []
    for _ in range(4):
        check = await ledger.check([b])
        decisions.append(check.allowed)
        if check.allowed:
            await ledger.settle(check.charges, CALL)
    assert decisions == [True, True, True, False]
    (spend,) = await ledger.status([b])
    assert spend.spent_nano == 3 * CALL == 45_000_000
    assert check.refused == spend and spend.remaining_nano == 0


async def test_concurrent_settlements_add_up_to_the_nano_dollar(make) -> None:  # type: ignore[no-untyped-def]
    ledger = make(Seeds(), WallClock(datetime(2026, 11, 30, 12, tzinfo=UTC)))
    b = budget(usd=100.0)
    check = await ledger.check([b])
    # Costs that are not binary fractions: summed as floats they would drift.
    await asyncio.gather(*(ledger.settle(check.charges, to_nano(0.1 + i * 1e-9))
                           for i in range(40)))
    (spend,) = await ledger.status([b])
    assert spend.spent_nano == 40 * 100_000_000 + sum(range(40))


async def test_utc_periods_start_afresh_and_seed_once(make) -> None:  # type: ignore[no-untyped-def]
    clock = WallClock(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC))
    seeds = Seeds(to_nano(0.03))  # already stored in the period before the first check
    ledger = make(seeds, clock)
    day, month, total = budget("day"), budget("month"), budget("total")
    check = await ledger.check([day, month, total])
    assert check.allowed and [s.spent_nano for s in check.spends] == [to_nano(0.03)] * 3
    await ledger.settle(check.charges, CALL)  # 0.045 in each
    assert not (await ledger.check([day])).allowed
    assert len(seeds.asked) == 3  # each period's counter was seeded once, then counted

    # A call admitted before midnight settles into the day it was admitted in.
    late = await ledger.check([total])
    clock.now += timedelta(seconds=2)  # 2026-12-01: a new day and a new month
    await ledger.settle(late.charges, CALL)
    spends = await ledger.status([day, month, total])
    assert [s.window.key for s in spends] == ["2026-12-01", "2026-12", "total"]
    assert [s.spent_nano for s in spends] == [to_nano(0.03), to_nano(0.03), to_nano(0.06)]
    assert [s.window.end for s in spends] == [datetime(2026, 12, 2, tzinfo=UTC),
                                              datetime(2027, 1, 1, tzinfo=UTC), None]


def test_calendar_windows() -> None:
    at = datetime(2028, 2, 29, 10, tzinfo=UTC)
    assert window_of("day", at) == Window("2028-02-29", datetime(2028, 2, 29, tzinfo=UTC),
                                          datetime(2028, 3, 1, tzinfo=UTC))
    assert window_of("month", at) == Window("2028-02", datetime(2028, 2, 1, tzinfo=UTC),
                                            datetime(2028, 3, 1, tzinfo=UTC))
    assert window_of("month", datetime(2026, 12, 31, 23, tzinfo=UTC)).end == datetime(
        2027, 1, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="week"):
        window_of("week", at)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    yield server
    server.stop()


async def test_redis_outage_fails_open_or_closed(redis_process: RedisProcess) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_process.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    clock = WallClock(datetime(2026, 11, 30, 12, tzinfo=UTC))
    lenient = RedisSpendLedger(client, Seeds(), fail_open=True, clock=clock)
    strict = RedisSpendLedger(client, Seeds(), fail_open=False, clock=clock)
    b = budget()
    try:
        admitted = await lenient.check([b])
        assert admitted.allowed
        redis_process.stop()
        opened = await lenient.check([b])
        assert opened.allowed and opened.charges == ((b, window_of("month", clock.now)),)
        closed = await strict.check([b])
        assert (closed.allowed, closed.unavailable) == (False, True)
        await lenient.settle(admitted.charges, CALL)  # lost for the counter, never raised
        with pytest.raises(RateLimiterUnavailable):
            await lenient.status([b])
        assert lenient.guard.counters() == {"backend_errors": 3, "failed_open": 1,
                                            "failed_closed": 0}
        assert strict.guard.counters() == {"backend_errors": 1, "failed_open": 0,
                                           "failed_closed": 1}
    finally:
        await client.aclose()
