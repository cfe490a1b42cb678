"""SQL spend ledger on ``rate_limit_buckets``: for several processes without Redis.

One row per (owner, period): ``bucket_type`` ``spend``, ``user_id`` the owner
(``key:<id>`` or ``user:<id>``), ``bucket_key`` the period key, ``value`` the spend in
nano-USD (whole numbers in a double: exact up to 2**53 nano-USD, about 9 million USD per
period), ``expires_at`` a day past the period's end (the limiter's sweep deletes it
later; ``total`` rows never expire). Every write is one statement, atomic on its own: a
settlement is ``value = value + cost`` (PostgreSQL row-locks it, SQLite's single writer
serialises it), and a missing row is created by an upsert that adds to whatever another
process created meanwhile, so no settlement is lost or counted twice.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ratelimit.base import RateLimiterUnavailable
from gateway.ratelimit.degraded import BackendGuard
from gateway.ratelimit.spend import (
    Budget,
    Charge,
    Seeder,
    Spend,
    SpendCheck,
    Window,
    decide,
    window_of,
)
from gateway.ratelimit.sql_backend import _UNIQUE, BUCKETS, _unreachable

_c = BUCKETS.c
EXPIRY_GRACE = timedelta(days=1)
NEVER = datetime(9999, 1, 1, tzinfo=UTC)


def _expires(window: Window) -> datetime:
    return NEVER if window.end is None else window.end + EXPIRY_GRACE


class SqlSpendLedger:
    """Spend rows in the gateway's database (PostgreSQL or SQLite)."""

    def __init__(self, engine: AsyncEngine, seeder: Seeder, *, fail_open: bool = True,
                 clock: Callable[[], datetime]) -> None:
        self.guard = BackendGuard("sql", fail_open=fail_open)
        dialect = engine.dialect.name
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        if dialect == "postgresql":
            # ``value = value + cost`` must add to the latest committed value, which is what
            # READ COMMITTED re-reads after waiting for the row lock, whatever the default.
            engine = engine.execution_options(isolation_level="READ COMMITTED")
        self._engine = engine
        self._seeder = seeder
        self._clock = clock

    def _row(self, budget: Budget, window: Window) -> tuple[sa.ColumnElement[bool], ...]:
        return (_c.user_id == budget.owner, _c.bucket_type == "spend",
                _c.bucket_key == window.key)

    async def _upsert(self, budget: Budget, window: Window, seed: int, cost: int) -> None:
        """Create the row at ``seed + cost``, or add ``cost`` to the one that exists."""
        stmt = self._insert(BUCKETS).values(
            id=uuid.uuid4(), user_id=budget.owner, bucket_type="spend",
            bucket_key=window.key, request_count=0, value=float(seed + cost),
            expires_at=_expires(window))
        async with self._engine.begin() as conn:
            await conn.execute(stmt.on_conflict_do_update(
                index_elements=_UNIQUE, set_={"value": _c.value + cost}))

    async def _read(self, budgets: Sequence[Budget], now: datetime) -> list[Spend]:
        spends = []
        for budget in budgets:
            window = window_of(budget.period, now)
            async with self._engine.connect() as conn:
                value = (await conn.execute(
                    sa.select(_c.value).where(*self._row(budget, window)))).scalar()
            if value is None:  # nothing counted here yet: the stored calls are the spend
                await self._upsert(budget, window, await self._seeder(budget, window), 0)
                async with self._engine.connect() as conn:
                    value = (await conn.execute(
                        sa.select(_c.value).where(*self._row(budget, window)))).scalar()
            spends.append(Spend(budget, window, round(value or 0)))
        return spends

    async def check(self, budgets: Sequence[Budget]) -> SpendCheck:
        """Read each budget's spend in its current period; consumes nothing."""
        now = self._clock()
        try:
            spends = await self._read(budgets, now)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("budget check", exc)
            if self.guard.fail_open:
                self.guard.failed_open += 1
                return SpendCheck(True, charges=tuple((b, window_of(b.period, now))
                                                      for b in budgets))
            self.guard.failed_closed += 1
            return SpendCheck(False, unavailable=True)
        self.guard.succeeded()
        return decide(spends, now)

    async def settle(self, charges: Sequence[Charge], cost_nano: int) -> None:
        """Add a finished call's cost to the periods it was admitted in."""
        if cost_nano <= 0:
            return
        try:
            for budget, window in charges:
                async with self._engine.begin() as conn:
                    added = await conn.execute(
                        sa.update(BUCKETS).where(*self._row(budget, window))
                        .values(value=_c.value + cost_nano).returning(_c.id))
                    found = added.first() is not None
                if not found:
                    await self._upsert(budget, window, await self._seeder(budget, window),
                                       cost_nano)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            # Lost for the counter; the stored row still has it for a later re-seed.
            self.guard.failed("budget settle", exc)
            return
        self.guard.succeeded()

    async def status(self, budgets: Sequence[Budget]) -> list[Spend]:
        """Each budget's spend now."""
        try:
            spends = await self._read(budgets, self._clock())
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("budget status", exc)
            raise RateLimiterUnavailable("the spend ledger database is unreachable") from exc
        self.guard.succeeded()
        return spends
