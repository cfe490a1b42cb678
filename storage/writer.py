"""The background writer: request rows, usage counters, audit rows and key touches,
enqueued from the hot path without waiting, written in batches, drained on shutdown.

No row is lost because of another: a batch the database refuses is split until the
refused row is alone, and that row is stored without its payload (or, if even that fails,
dropped, logged and counted). A database that is unavailable is waited out instead.
With a spool (storage/spool.py), queued rows also survive the process being killed."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.conversations import record_calls
from storage.models import ApiKey, AuditLog, InferenceRequest, UsageDaily
from storage.records import CallRecord
from storage.spool import KIND_TABLES, Item, Spool, dead_spools, unfinished_row
from storage.unstorable import describe, is_row_error, without_payload

log = logging.getLogger("gateway.writer")

# Rows per INSERT statement while the writer keeps up. SQLAlchemy binds a statement's
# parameters on the event loop (~15 µs a row): one 2,000-row statement held the loop for tens
# of ms, which every request then waited for, and 16 rows hold it for a fraction of a ms.
# But every statement also waits for a turn of the loop, which takes many ms when the loop
# is saturated; so once the queue is backed up, a batch takes everything queued and is one
# statement (throughput first).
STATEMENT_ROWS = 16

_USAGE_COUNTERS = ("requests", "succeeded", "failed", "cancelled", "prompt_tokens",
                   "completion_tokens", "processing_time_ms", "time_to_first_token_ms",
                   "ttft_samples", "cost_usd")


@dataclass
class WriterStats:
    enqueued: int = 0
    written: int = 0
    dropped: int = 0  # queue full too long, or refused even without payload (unstorable)
    failed_batches: int = 0  # batches the database refused, split to find the bad rows
    waits: int = 0  # calls that waited for room in a full queue (backpressure)
    stripped: int = 0  # rows stored without their payload, marked in ``error``/``details``
    unstorable: int = 0  # rows refused even without payload (also counted in ``dropped``)
    unavailable: int = 0  # attempts that failed on the database, not on the rows; retried
    replayed: int = 0  # rows read back from the spools of dead processes at start


class _SpooledQueue(asyncio.Queue[Item]):
    """Hands each item to the spool the moment it enters the queue, so the spool's order is
    the queue's: the writer commits in that order and reports how many, not which."""

    def __init__(self, maxsize: int, spool: Spool) -> None:
        super().__init__(maxsize)
        self._spool_append = spool.append

    def _put(self, item: Item) -> None:
        super()._put(item)  # type: ignore[misc]
        self._spool_append(item)


class RequestWriter:
    """Owns one queue and one task; ``submit_*`` never blocks and never raises.

    A batch takes everything queued (up to ``batch_size``) and costs a handful of awaits
    whatever its size. When the event loop is saturated each await waits behind the
    requests being served, so throughput comes from big batches, not from many small ones.
    """

    def __init__(self, engine: AsyncEngine, *, queue_size: int = 10_000, batch_size: int = 2000,
                 flush_seconds: float = 0.2, retries: int = 3,
                 backpressure_seconds: float = 30.0, spool: Spool | None = None,
                 drain_seconds: float = 30.0) -> None:
        self._engine = engine
        self._spool = spool
        self._queue: asyncio.Queue[Item] = (
            _SpooledQueue(queue_size, spool) if spool else asyncio.Queue(queue_size))
        self._drain_seconds = drain_seconds
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._retries = retries
        self._backpressure_seconds = backpressure_seconds
        self._waiting = 0
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        self.stats = WriterStats()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def submit_request(self, record: CallRecord) -> bool:
        """Queue one finished call's row (and its usage counters).

        Returns at once while the queue has room, which is always below capacity. When the
        gateway takes calls faster than it can record them, the call waits for room (up
        to ``backpressure_seconds``) instead of losing its row: overload slows callers
        down rather than dropping records.
        """
        row = record.values()
        # First come, first served: while calls wait for room, later ones queue behind them
        # (a slot freed for a waiter must not go to a newcomer).
        if not self._waiting and self._put("request", row):
            return True
        self.stats.waits += 1
        self._waiting += 1
        try:
            await asyncio.wait_for(self._queue.put(("request", row)),
                                   self._backpressure_seconds)
        except TimeoutError:
            self._drop("request")
            return False
        finally:
            self._waiting -= 1
        self.stats.enqueued += 1
        self._idle.clear()
        return True

    def begin(self, record: CallRecord) -> None:
        """Note a call in progress (in the spool only): if the process dies before the call
        ends, the next start stores it as failed, with what was known at its start."""
        if self._spool is not None:
            self._spool.started(record.identity())

    def submit_audit(self, row: dict[str, Any]) -> bool:
        return self._put("audit", row) or self._drop("audit")

    def touch_key(self, key_id: Any, at: datetime) -> bool:
        return self._put("touch", {"id": key_id, "at": at}) or self._drop("touch")

    def _put(self, kind: str, row: dict[str, Any]) -> bool:
        try:
            self._queue.put_nowait((kind, row))
        except asyncio.QueueFull:
            return False
        self.stats.enqueued += 1
        self._idle.clear()
        return True

    def _drop(self, kind: str) -> bool:
        """Count (and now and then log) a row the queue had no room for; always False."""
        self.stats.dropped += 1
        if self.stats.dropped == 1 or self.stats.dropped % 1000 == 0:
            log.error("writer queue full: dropped %d rows so far (this one: %s)",
                      self.stats.dropped, kind)
        return False

    def start(self) -> None:
        if self._spool is not None:
            self._spool.open()
        self._task = asyncio.create_task(self._run(), name="request-writer")

    async def replay(self) -> int:
        """Store the rows left in the spools of dead processes, idempotently (a row already
        stored is skipped and not counted again); returns how many were read."""
        if self._spool is None:
            return 0
        total = 0
        spools = dead_spools(self._spool.directory)
        while (dead := await asyncio.to_thread(next, spools, None)) is not None:
            try:
                items = await asyncio.to_thread(dead.items)
                rows = [item for item in items if item[0] != "started"]
                finished = {row["id"] for kind, row in rows if kind == "request"}
                unfinished = {row["id"]: ("request", unfinished_row(row))
                              for kind, row in items
                              if kind == "started" and row["id"] not in finished}
                # Separate batches: one INSERT takes rows of one shape.
                for batch in (rows, list(unfinished.values())):
                    for start in range(0, len(batch), self._batch_size):
                        await self._commit(batch[start:start + self._batch_size],
                                           STATEMENT_ROWS, idempotent=True, spooled=False)
            except BaseException:
                dead.release()
                raise
            await asyncio.to_thread(dead.remove)
            log.warning("writer: replayed %d rows left by a stopped process (spool %s), "
                        "%d of them calls it did not finish", len(rows) + len(unfinished),
                        dead.token, len(unfinished))
            total += len(rows) + len(unfinished)
        self.stats.replayed += total
        return total

    async def flush(self) -> None:
        """Wait until everything queued so far is written (tests and shutdown)."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Drain the queue (for at most ``drain_seconds``: what is left stays in the spool
        for the next start), then stop the task and close the spool."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.flush(), self._drain_seconds)
        except TimeoutError:
            log.error("writer: %d rows not written %.0f s into shutdown%s", self.pending,
                      self._drain_seconds,
                      "; the spool keeps them" if self._spool else "; they are lost")
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._spool is not None:
            await asyncio.to_thread(self._spool.close)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._flush_seconds
            while True:
                while len(batch) < self._batch_size and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                wait = deadline - loop.time()
                if len(batch) >= self._batch_size or wait <= 0:
                    break
                await asyncio.sleep(wait)  # one timer per batch, not one per row
            backed_up = not self._queue.empty()
            if backed_up:
                # Behind: everything queued goes in this batch, as one statement. Each
                # statement waits for turns of a saturated loop, so rows per turn is what
                # lets the writer catch up.
                while not self._queue.empty():
                    batch.append(self._queue.get_nowait())
            await self._commit(batch, None if backed_up else STATEMENT_ROWS)
            if self._queue.empty():
                self._idle.set()

    async def _commit(self, batch: list[Item], rows_per_statement: int | None, *,
                      idempotent: bool = False, spooled: bool = True) -> None:
        """Store every storable row of ``batch``; return once each one is stored or known
        unstorable. Rows go in queue order, which is what the spool counts on."""
        error = await self._attempt(batch, rows_per_statement, idempotent)
        if error is None:
            self.stats.written += len(batch)
        elif len(batch) > 1:
            # Bisect: a single bad row costs about 2·log2(batch) small transactions, and
            # every other row of the batch is stored.
            self.stats.failed_batches += 1
            log.warning("writer: the database refused a batch of %d (%s); splitting it",
                        len(batch), describe(error))
            mid = len(batch) // 2
            for half in (batch[:mid], batch[mid:]):
                await self._commit(half, STATEMENT_ROWS, idempotent=idempotent,
                                   spooled=spooled)
            return  # the halves told the spool
        else:
            await self._store_without_payload(batch[0], error, idempotent)
        if spooled and self._spool is not None:
            self._spool.committed(len(batch))

    async def _attempt(self, batch: list[Item], rows_per_statement: int | None,
                       idempotent: bool) -> Exception | None:
        """Write ``batch`` in one transaction: None once it is stored, or the error when
        its rows are at fault. An unavailable database is retried until it answers."""
        attempt = 0
        while True:
            try:
                await self._write(batch, rows_per_statement, idempotent)
                return None
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if is_row_error(exc):
                    return exc
                attempt += 1
                self.stats.unavailable += 1
                # An error we cannot classify that persists while the database answers a
                # probe is taken as the rows' fault, so it cannot wedge the writer.
                if attempt > self._retries and await self._reachable():
                    return exc
                if attempt == 1 or attempt % 10 == 0:
                    log.warning("writer: database unavailable (attempt %d, %d rows waiting)",
                                attempt, len(batch) + self.pending, exc_info=True)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** min(attempt, 6)))

    async def _reachable(self) -> bool:
        try:
            async with asyncio.timeout(5):
                async with self._engine.connect() as conn:
                    await conn.execute(sa.text("SELECT 1"))
        except Exception:
            return False
        return True

    async def _store_without_payload(self, item: Item, error: Exception,
                                     idempotent: bool) -> None:
        kind, row = item
        reason = describe(error)
        table = KIND_TABLES.get(kind)
        if table is not None:
            stripped = without_payload(table, row, reason)
            if await self._attempt([(kind, stripped)], None, idempotent) is None:
                self.stats.written += 1
                self.stats.stripped += 1
                log.error("writer: stored %s row %s without its payload: %s", kind,
                          row.get("id"), reason)
                return
        self.stats.unstorable += 1
        self.stats.dropped += 1
        log.error("writer: dropped a %s row the database refuses (%s): %s", kind,
                  row.get("id"), reason)

    async def _write(self, batch: list[Item], rows_per_statement: int | None,
                     idempotent: bool = False) -> None:
        requests = [row for kind, row in batch if kind == "request"]
        audits = [row for kind, row in batch if kind == "audit"]
        touches: dict[Any, datetime] = {}
        for kind, row in batch:
            if kind == "touch":
                touches[row["id"]] = max(row["at"], touches.get(row["id"], row["at"]))
        async with self._engine.begin() as conn:
            dialect = conn.dialect.name
            table = InferenceRequest.__table__
            insert: Any = sa.insert(table)
            if idempotent:
                # A replayed row may be in already (committed just before the crash): skip
                # it, and count usage only for the rows this transaction inserts.
                insert = _insert(dialect, table).on_conflict_do_nothing(
                    index_elements=["id"]).returning(table.c.id)
            inserted: set[Any] = set()
            step = rows_per_statement or len(requests) or 1
            for start in range(0, len(requests), step):
                # Binding parameters runs on the event loop: in slices, requests interleave.
                result = await conn.execute(insert, requests[start:start + step])
                if idempotent:
                    inserted.update(result.scalars())
            if idempotent:
                requests = [row for row in requests if row["id"] in inserted]
            if requests:
                for stmt in usage_upserts(dialect, requests):
                    await conn.execute(stmt)
                await record_calls(conn, requests)
            if audits:
                audit_insert: Any = sa.insert(AuditLog.__table__)
                if idempotent:
                    audit_insert = _insert(dialect, AuditLog.__table__).on_conflict_do_nothing(
                        index_elements=["id"])
                await conn.execute(audit_insert, audits)
            if touches:
                keys = ApiKey.__table__
                await conn.execute(
                    sa.update(keys).where(keys.c.id == sa.bindparam("kid"))
                    .values(last_used_at=sa.bindparam("at")),
                    [{"kid": k, "at": at} for k, at in touches.items()])


def _insert(dialect: str, table: Any) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def usage_upsert(dialect: str, user_id: Any, day: Any, model: str,
                 counts: dict[str, float]) -> Any:
    """One ``INSERT … ON CONFLICT DO UPDATE`` adding ``counts`` to a usage_daily row."""
    table = UsageDaily.__table__
    stmt = _insert(dialect, table).values(user_id=user_id, day=day, model=model, **counts)
    return stmt.on_conflict_do_update(
        index_elements=["user_id", "day", "model"],
        set_={k: table.c[k] + stmt.excluded[k] for k in counts})


def usage_upserts(dialect: str, rows: list[dict[str, Any]]) -> list[Any]:
    """Upserts adding finished request rows to their users' daily usage counters."""
    totals: dict[tuple, dict[str, float]] = defaultdict(
        lambda: dict.fromkeys(_USAGE_COUNTERS, 0))
    for row in rows:
        t = totals[(row["user_id"], row["created_at"].date(), row["model"])]
        t["requests"] += 1
        status = row.get("status")
        t["succeeded"] += status == "completed"
        t["failed"] += status == "failed"
        t["cancelled"] += status == "cancelled"
        t["prompt_tokens"] += row.get("prompt_tokens") or 0
        t["completion_tokens"] += row.get("completion_tokens") or 0
        t["processing_time_ms"] += row.get("processing_time_ms") or 0
        if row.get("time_to_first_token_ms") is not None:
            t["time_to_first_token_ms"] += row["time_to_first_token_ms"]
            t["ttft_samples"] += 1
        t["cost_usd"] += row.get("cost_usd") or 0.0
    return [usage_upsert(dialect, user_id, day, model, counts)
            for (user_id, day, model), counts in totals.items()]
