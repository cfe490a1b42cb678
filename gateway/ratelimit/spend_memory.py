"""In-process spend ledger: exact within one process, seeded from the stored calls."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

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


class MemorySpendLedger:
    """Spend per (owner, period) in this process's memory.

    A period this process has not seen yet starts from the stored calls (the seeder), so a
    restart does not hand out a budget afresh. Updates after the seed's ``await`` are
    plain dict operations, atomic under asyncio's single thread.
    """

    def __init__(self, seeder: Seeder, *, clock: Callable[[], datetime]) -> None:
        self._seeder = seeder
        self._clock = clock
        self._spent: dict[tuple[str, str], int] = {}
        self._ends: dict[tuple[str, str], datetime | None] = {}
        self._next_sweep: datetime | None = None

    async def _spent_in(self, budget: Budget, window: Window) -> int:
        slot = (budget.owner, window.key)
        spent = self._spent.get(slot)
        if spent is None:
            seed = await self._seeder(budget, window)
            # Another call may have seeded (and settled) while we awaited: keep its value.
            spent = self._spent.setdefault(slot, seed)
            self._ends[slot] = window.end
        return spent

    async def check(self, budgets: Sequence[Budget]) -> SpendCheck:
        """Read each budget's spend in its current period; consumes nothing."""
        now = self._clock()
        self._forget_before(now)
        spends = []
        for budget in budgets:
            window = window_of(budget.period, now)
            spends.append(Spend(budget, window, await self._spent_in(budget, window)))
        return decide(spends, now)

    async def settle(self, charges: Sequence[Charge], cost_nano: int) -> None:
        """Add a finished call's cost to the periods it was admitted in."""
        if cost_nano <= 0:
            return
        for budget, window in charges:
            await self._spent_in(budget, window)
            self._spent[budget.owner, window.key] += cost_nano

    async def status(self, budgets: Sequence[Budget]) -> list[Spend]:
        """Each budget's spend now."""
        return list((await self.check(budgets)).spends)

    def _forget_before(self, now: datetime) -> None:
        """Drop periods that are over (a settle for one still in flight re-seeds it); at
        most once a minute, so a check stays O(budgets)."""
        if self._next_sweep is not None and now < self._next_sweep:
            return
        self._next_sweep = now + timedelta(minutes=1)
        over = [slot for slot, end in self._ends.items() if end is not None and end <= now]
        for slot in over:
            del self._ends[slot]
            self._spent.pop(slot, None)
