"""Spend budgets: the contract every ledger backend (memory, Redis, SQL) shares.

Semantics:

- Money is counted in integer nano-USD (:data:`NANO` per dollar), never in summed floats:
  each call's cost is rounded to a nano-dollar once, when it is settled.
- A budget covers one UTC calendar *period*: ``day``, ``month``, or ``total`` (forever).
  The spend of a period is kept under its own ledger key (``2026-11-30``, ``2026-11``,
  ``total``), so a new period starts at 0 without anything being reset.
- Admission (:meth:`SpendLedger.check`) only reads: a call is admitted while the spend is
  *below* every budget that applies. The cost is added when the call ends
  (:meth:`SpendLedger.settle`) to the periods it was admitted in. Nothing is reserved, so
  calls admitted at the same time can overshoot a budget by what those calls cost.
- A period's ledger entry that does not exist yet (a new process on the memory backend, a
  Redis that lost its keys, a first call) is *seeded* from the stored calls: the sum of
  ``inference_requests.cost_usd`` of the key (or user) created within the period. Calls in
  flight at that moment are not in the seed; they are added when they settle.
"""

from __future__ import annotations

import calendar
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from sqlalchemy.ext.asyncio import AsyncEngine

NANO = 1_000_000_000
"""Ledger units per US dollar."""
PERIODS = ("day", "month", "total")
DEFAULT_PERIOD = "month"
MAX_BUDGET_USD = 1_000_000_000.0
"""The largest budget accepted: its nano-USD fit a 64-bit counter with room to spare."""


def to_nano(usd: float) -> int:
    """``usd`` in whole nano-dollars."""
    return round(usd * NANO)


def to_usd(nano: int) -> float:
    """Nano-dollars back to dollars, for display."""
    return round(nano / NANO, 9)


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget that applies to a call: an API key's, or the user's plan's."""

    scope: str  # "key" | "plan"
    name: str  # the key's name, or the plan's
    user_id: str
    key_id: str | None  # set for a key's budget: only that key's calls count
    period: str  # "day" | "month" | "total"
    limit_nano: int

    @property
    def owner(self) -> str:
        """Whose calls count, as the ledgers name it: ``key:<id>`` or ``user:<id>``."""
        return f"key:{self.key_id}" if self.key_id is not None else f"user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class Window:
    """One period instance: the ledger key and its UTC bounds (none for ``total``)."""

    key: str
    start: datetime | None
    end: datetime | None


def window_of(period: str, now: datetime) -> Window:
    """The UTC calendar period containing ``now``."""
    now = now.astimezone(UTC)
    if period == "day":
        start = datetime(now.year, now.month, now.day, tzinfo=UTC)
        return Window(start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    if period == "month":
        start = datetime(now.year, now.month, 1, tzinfo=UTC)
        days = calendar.monthrange(now.year, now.month)[1]
        return Window(start.strftime("%Y-%m"), start, start + timedelta(days=days))
    if period == "total":
        return Window("total", None, None)
    raise ValueError(f"unknown budget period {period!r}: use one of {', '.join(PERIODS)}")


@dataclass(frozen=True, slots=True)
class Spend:
    """What a budget has spent in its current period."""

    budget: Budget
    window: Window
    spent_nano: int

    @property
    def remaining_nano(self) -> int:
        return max(0, self.budget.limit_nano - self.spent_nano)

    @property
    def exhausted(self) -> bool:
        return self.spent_nano >= self.budget.limit_nano


Charge = tuple[Budget, Window]
"""Where a call's cost goes when it settles: a budget and the period it was admitted in."""


@dataclass(frozen=True, slots=True)
class SpendCheck:
    """The outcome of one admission check; ``charges`` are for ``settle``."""

    allowed: bool
    spends: tuple[Spend, ...] = ()
    refused: Spend | None = None  # the first exhausted budget
    unavailable: bool = False  # the backend is down and fails closed
    charges: tuple[Charge, ...] = ()
    at: datetime | None = None  # the ledger's clock when checked (for the reset wait)


Seeder = Callable[[Budget, Window], Awaitable[int]]
"""The spend already stored for a budget's period, in nano-USD (see the module doc)."""


def decide(spends: Sequence[Spend], now: datetime) -> SpendCheck:
    """Admit while every budget is below its limit."""
    charges = tuple((s.budget, s.window) for s in spends)
    for spend in spends:
        if spend.exhausted:
            return SpendCheck(False, tuple(spends), spend, charges=charges, at=now)
    return SpendCheck(True, tuple(spends), charges=charges, at=now)


class SpendLedger(Protocol):
    """Spend per budget and period, exact across every process sharing the backend."""

    async def check(self, budgets: Sequence[Budget]) -> SpendCheck:
        """Read each budget's spend in its current period; consumes nothing."""
        ...

    async def settle(self, charges: Sequence[Charge], cost_nano: int) -> None:
        """Add a finished call's cost to the periods it was admitted in."""
        ...

    async def status(self, budgets: Sequence[Budget]) -> list[Spend]:
        """Each budget's spend now; raises ``RateLimiterUnavailable`` when unreachable."""
        ...


def build_ledger(backend: str, *, seeder: Seeder, redis: Redis | None = None,
                 engine: AsyncEngine | None = None, fail_open: bool = True,
                 clock: Callable[[], datetime] | None = None) -> SpendLedger:
    """The ledger on the rate limiter's backend (``memory``, ``redis`` or ``sql``)."""
    now = clock or (lambda: datetime.now(UTC))
    if backend == "memory":
        from gateway.ratelimit.spend_memory import MemorySpendLedger

        return MemorySpendLedger(seeder, clock=now)
    if backend == "redis":
        if redis is None:
            raise ValueError("the redis spend ledger needs a client: set REDIS_URL")
        from gateway.ratelimit.spend_redis import RedisSpendLedger

        return RedisSpendLedger(redis, seeder, fail_open=fail_open, clock=now)
    if backend == "sql":
        if engine is None:
            raise ValueError("the sql spend ledger needs the database engine")
        from gateway.ratelimit.spend_sql import SqlSpendLedger

        return SqlSpendLedger(engine, seeder, fail_open=fail_open, clock=now)
    raise ValueError(f"unknown rate limit backend {backend!r}: use memory, redis or sql")
