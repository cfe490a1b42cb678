"""The background writer: request rows, usage counters, audit rows and key touches,
enqueued from the hot path without waiting, written in batches, drained on shutdown."""

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

from storage.models import ApiKey, AuditLog, InferenceRequest, UsageDaily

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
                   "ttft_samples")


@dataclass
class WriterStats:
    enqueued: int = 0
    written: int = 0
    dropped: int = 0
    failed_batches: int = 0
    waits: int = 0  # calls that waited for room in a full queue (backpressure)


class RequestWriter:
    """Owns one queue and one task; ``submit_*`` never blocks and never raises.

    A batch takes everything queued (up to ``batch_size``) and costs a handful of awaits
    whatever its size. When the event loop is saturated each await waits behind the
    requests being served, so throughput comes from big batches, not from many small ones.
    """

    def __init__(self, engine: AsyncEngine, *, queue_size: int = 10_000, batch_size: int = 2000,
                 flush_seconds: float = 0.2, retries: int = 3,
                 backpressure_seconds: float = 30.0) -> None:
        self._engine = engine
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_size)
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

    async def submit_request(self, row: dict[str, Any]) -> bool:
        """Queue one finished ``inference_requests`` row (and its usage counters).

        Returns at once while the queue has room, which is always below capacity. When the
        gateway takes calls faster than it can record them, the call waits for room (up
        to ``backpressure_seconds``) instead of losing its row: overload slows callers
        down rather than dropping records.
        """
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
        self._task = asyncio.create_task(self._run(), name="request-writer")

    async def flush(self) -> None:
        """Wait until everything queued so far is written (tests and shutdown)."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Drain the queue, then stop the task."""
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

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
            await self._write_with_retries(batch, None if backed_up else STATEMENT_ROWS)
            if self._queue.empty():
                self._idle.set()

    async def _write_with_retries(self, batch: list[tuple[str, dict[str, Any]]],
                                  rows_per_statement: int | None) -> None:
        for attempt in range(self._retries + 1):
            try:
                await self._write(batch, rows_per_statement)
                self.stats.written += len(batch)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("writer batch of %d failed (attempt %d)", len(batch), attempt + 1)
                await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        self.stats.failed_batches += 1
        self.stats.dropped += len(batch)
        log.error("writer dropped a batch of %d rows after %d attempts", len(batch),
                  self._retries + 1)

    async def _write(self, batch: list[tuple[str, dict[str, Any]]],
                     rows_per_statement: int | None) -> None:
        requests = [row for kind, row in batch if kind == "request"]
        audits = [row for kind, row in batch if kind == "audit"]
        touches: dict[Any, datetime] = {}
        for kind, row in batch:
            if kind == "touch":
                touches[row["id"]] = max(row["at"], touches.get(row["id"], row["at"]))
        async with self._engine.begin() as conn:
            insert = sa.insert(InferenceRequest.__table__)
            step = rows_per_statement or len(requests) or 1
            for start in range(0, len(requests), step):
                # Binding parameters runs on the event loop: in slices, requests interleave.
                await conn.execute(insert, requests[start:start + step])
            if requests:
                for stmt in usage_upserts(conn.dialect.name, requests):
                    await conn.execute(stmt)
            if audits:
                await conn.execute(sa.insert(AuditLog.__table__), audits)
            if touches:
                table = ApiKey.__table__
                await conn.execute(
                    sa.update(table).where(table.c.id == sa.bindparam("kid"))
                    .values(last_used_at=sa.bindparam("at")),
                    [{"kid": k, "at": at} for k, at in touches.items()])


def usage_upsert(dialect: str, user_id: Any, day: Any, model: str,
                 counts: dict[str, int]) -> Any:
    """One ``INSERT … ON CONFLICT DO UPDATE`` adding ``counts`` to a usage_daily row."""
    table = UsageDaily.__table__
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(table).values(user_id=user_id, day=day, model=model, **counts)
    return stmt.on_conflict_do_update(
        index_elements=["user_id", "day", "model"],
        set_={k: table.c[k] + stmt.excluded[k] for k in counts})


def usage_upserts(dialect: str, rows: list[dict[str, Any]]) -> list[Any]:
    """Upserts adding finished request rows to their users' daily usage counters."""
    totals: dict[tuple, dict[str, int]] = defaultdict(lambda: dict.fromkeys(_USAGE_COUNTERS, 0))
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
    return [usage_upsert(dialect, user_id, day, model, counts)
            for (user_id, day, model), counts in totals.items()]
