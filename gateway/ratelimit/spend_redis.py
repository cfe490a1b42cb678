"""Redis spend ledger: one integer counter per (owner, period), shared by every process.

Keys: ``spend:{<owner>}:<period key>`` holding nano-USD, expiring a day after the period
ends (``total`` never expires). Settling is one atomic script (``INCRBY`` when the key
exists, else seed-if-absent then ``INCRBY``), so concurrent settlements from any number
of processes add up exactly. Failures follow the limiter's ``fail_open`` policy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from redis.asyncio import Redis

from gateway.ratelimit.base import RateLimiterUnavailable
from gateway.ratelimit.degraded import BackendGuard
from gateway.ratelimit.redis_backend import UNREACHABLE
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

logger = logging.getLogger("gateway.ratelimit")

# Kept a day past the period's end, so a call admitted just before it settles into it.
EXPIRY_GRACE = timedelta(days=1)

# KEYS: the counter. ARGV: cost. -1 when the counter is missing (it needs a seed first).
ADD = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

# KEYS: the counter. ARGV: seed, cost, expiry (Unix ms, '' for none). A seed loses to a
# counter another process created meanwhile: only its value stands.
SEED_ADD = """
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local total = redis.call('INCRBY', KEYS[1], ARGV[2])
if ARGV[3] ~= '' then redis.call('PEXPIREAT', KEYS[1], ARGV[3]) end
return total
"""


def _expiry_ms(window: Window) -> str:
    return "" if window.end is None else str(int((window.end + EXPIRY_GRACE).timestamp()
                                                 * 1000))


class RedisSpendLedger:
    """Spend counters in Redis; exact across every process sharing the server."""

    def __init__(self, client: Redis, seeder: Seeder, *, fail_open: bool = True,
                 clock: Callable[[], datetime], prefix: str = "spend") -> None:
        self.guard = BackendGuard("redis", fail_open=fail_open)
        self._client = client
        self._seeder = seeder
        self._clock = clock
        self._prefix = prefix
        self._add = client.register_script(ADD)
        self._seed_add = client.register_script(SEED_ADD)

    def _key(self, budget: Budget, window: Window) -> str:
        return f"{self._prefix}:{{{budget.owner}}}:{window.key}"

    async def _read(self, budgets: Sequence[Budget], now: datetime) -> list[Spend]:
        windows = [window_of(b.period, now) for b in budgets]
        async with self._client.pipeline(transaction=False) as pipe:
            for budget, window in zip(budgets, windows, strict=True):
                pipe.get(self._key(budget, window))
            values = await pipe.execute()
        spends = []
        for budget, window, value in zip(budgets, windows, values, strict=True):
            if value is None:  # nothing counted here yet: the stored calls are the spend
                value = await self._seed_add(keys=[self._key(budget, window)],
                                             args=[await self._seeder(budget, window), 0,
                                                   _expiry_ms(window)])
            spends.append(Spend(budget, window, int(value)))
        return spends

    async def check(self, budgets: Sequence[Budget]) -> SpendCheck:
        """Read each budget's spend in its current period; consumes nothing."""
        now = self._clock()
        try:
            spends = await self._read(budgets, now)
        except UNREACHABLE as exc:
            self.guard.failed("budget check", exc)
            return self._degraded(budgets)
        self.guard.succeeded()
        return decide(spends, now)

    def _degraded(self, budgets: Sequence[Budget]) -> SpendCheck:
        if self.guard.fail_open:
            self.guard.failed_open += 1
            now = self._clock()
            return SpendCheck(True, charges=tuple((b, window_of(b.period, now))
                                                  for b in budgets))
        self.guard.failed_closed += 1
        return SpendCheck(False, unavailable=True)

    async def settle(self, charges: Sequence[Charge], cost_nano: int) -> None:
        """Add a finished call's cost to the periods it was admitted in."""
        if cost_nano <= 0:
            return
        try:
            for budget, window in charges:
                key = self._key(budget, window)
                if int(await self._add(keys=[key], args=[cost_nano])) < 0:
                    seed = await self._seeder(budget, window)
                    await self._seed_add(keys=[key],
                                         args=[seed, cost_nano, _expiry_ms(window)])
        except UNREACHABLE as exc:
            # Lost for the counter; the stored row still has it for a later re-seed.
            self.guard.failed("budget settle", exc)
            return
        self.guard.succeeded()

    async def status(self, budgets: Sequence[Budget]) -> list[Spend]:
        """Each budget's spend now."""
        try:
            spends = await self._read(budgets, self._clock())
        except UNREACHABLE as exc:
            self.guard.failed("budget status", exc)
            raise RateLimiterUnavailable("the Redis spend ledger is unreachable") from exc
        self.guard.succeeded()
        return spends
