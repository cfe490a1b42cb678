"""Where the read-only views read: a streaming replica when it is caught up, else the primary.

The rule (read-your-writes by WAL position): a read goes to the replica only once the
replica has replayed the primary's WAL up to where it stood when the read began, so it sees
every write committed before then, by this process or any other. The read waits for that up
to ``max_wait``; a replica still behind, unreachable or failing sends the read to the
primary instead, never an error and never stale data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

log = logging.getLogger("gateway.reads")
T = TypeVar("T")

# After the replica failed (refused, dropped, timed out), reads go straight to the primary
# for this long instead of paying for a failed attempt each.
RETRY_SECONDS = 5.0
# The first poll of a lagging replica comes this soon; each next one twice as late.
FIRST_POLL_SECONDS = 0.002
# pg_current_wal_flush_lsn(), not pg_current_wal_lsn() (written, maybe not yet flushed) nor
# the insert position: a commit the primary has acknowledged (synchronous_commit anything
# but 'off'; the default is 'on') is flushed, so the flush position covers it; and the
# replica receives flushed WAL only, so it can always reach that position.
PRIMARY_POSITION = sa.text("SELECT pg_current_wal_flush_lsn()::text")
REPLAYED_POSITION = sa.text("SELECT pg_last_wal_replay_lsn()::text")


class NotAReplica(Exception):
    """DATABASE_READ_URL leads to a server that is not replaying a primary's WAL."""


_REPLICA_ERRORS = (DBAPIError, OSError, TimeoutError, NotAReplica)


def parse_lsn(text: str) -> int:
    """A PostgreSQL LSN (``16/B374D848``) as a number."""
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


class PrimaryPosition:
    """The primary's flushed WAL position for reads that began before the query for it.

    Reads share queries: a read waits for the first query sent after it began (its result
    covers every commit acknowledged before the read began), so concurrent reads cost one
    query per round trip, not one each.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._next: asyncio.Future[int] | None = None  # the query not sent yet
        self._tasks: set[asyncio.Task[None]] = set()

    async def current(self) -> int:
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(self._query(self._next), name="primary-wal-position")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(self._next)

    async def _query(self, result: asyncio.Future[int]) -> None:
        try:
            async with self._engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                # From here on a read that begins waits for the next query: this one may
                # be answered before that read began.
                if self._next is result:
                    self._next = None
                lsn = parse_lsn((await conn.execute(PRIMARY_POSITION)).scalar_one())
        except asyncio.CancelledError:  # shutdown
            if self._next is result:
                self._next = None
            result.cancel()
            raise
        except Exception as exc:
            if self._next is result:
                self._next = None
            result.set_exception(exc)
            result.exception()  # the waiting reads get it; no reads left is no error
            return
        if not result.done():
            result.set_result(lsn)


class ReadEngine:
    """The connection for a read-only query: ``run(fn)`` calls ``fn`` with one.

    Without a replica every read is the primary's, as if this class did not exist.
    """

    def __init__(self, primary: AsyncEngine, replica: AsyncEngine | None = None, *,
                 max_wait: float = 0.1,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.primary = primary
        self.replica = replica
        self._max_wait = max_wait
        self._clock = clock
        self._position = PrimaryPosition(primary)
        self._retry_at = 0.0
        self._degraded: str | None = None  # why reads go to the primary, while they do
        # The position a read gave up waiting for: until the replica has replayed that far
        # it lags by more than the wait, and reads do not wait for it again.
        self._gave_up_at: int | None = None

    async def run(self, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """``fn``'s result on the replica when the rule allows, else on the primary."""
        if self.replica is not None and self._clock() >= self._retry_at:
            # Outside the try: a primary that fails is the read's error, as without a replica.
            target = await self._position.current()
            try:
                async with self.replica.connect() as conn:
                    if await self._caught_up(conn, target):
                        result = await fn(conn)
                        self._recovered()
                        return result
                self._gave_up_at = max(target, self._gave_up_at or 0)
                self._fall_back("it has not replayed the primary's writes yet "
                                f"(waited up to {self._max_wait * 1000:.0f} ms)")
            except _REPLICA_ERRORS as exc:
                self._retry_at = self._clock() + RETRY_SECONDS
                self._fall_back(f"it failed ({type(exc).__name__}: {exc})")
        async with self.primary.connect() as conn:
            return await fn(conn)

    async def _caught_up(self, conn: AsyncConnection, target: int) -> bool:
        """Whether the replica reaches ``target`` within the wait. A replica still short of
        the position an earlier read gave up on gets one look and no wait: a replica that
        lags for long does not slow every read down, and one that only stumbled (it is past
        that position now) is waited for again at once."""
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        pause = FIRST_POLL_SECONDS
        while True:
            replayed = (await conn.execute(REPLAYED_POSITION)).scalar_one()
            if replayed is None:  # promoted, or the wrong URL: its data may have diverged
                raise NotAReplica("it is not a replica in recovery")
            position = parse_lsn(replayed)
            if position >= target:
                return True
            if self._gave_up_at is not None and position < self._gave_up_at:
                return False
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(pause, left))
            pause *= 2

    def _fall_back(self, why: str) -> None:
        if self._degraded is None:  # once per episode, not once per read
            log.warning("read replica: %s; reads go to the primary until it catches up", why)
        self._degraded = why

    def _recovered(self) -> None:
        self._gave_up_at = None
        if self._degraded is not None:
            log.warning("read replica: caught up again; reads go to it")
            self._degraded = None

    async def dispose(self) -> None:
        """Close the replica's pool (the primary's belongs to the app)."""
        if self.replica is not None:
            await self.replica.dispose()
