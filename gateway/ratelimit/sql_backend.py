"""SQL limiter on ``rate_limit_buckets``: for several gateway processes without Redis.

Rows (``bucket_type``), all keyed by ``user_id`` = the subject (hashed if over 64 chars):

- ``lock``: one per subject; every ``acquire`` upserts it first, which row-locks it until
  commit, so acquires of one subject are serialised across processes on PostgreSQL;
- ``window``: one per admitted call (``bucket_key`` = slot id, ``request_count`` 1,
  ``value`` = tokens, ``expires_at`` = admitted + window), plus ``<slot>:x`` rows
  (``request_count`` 0) for usage charged at release beyond the estimate;
- ``concurrent``: one per held slot, ``expires_at`` = lease expiry;
- ``hit``: one per counted attempt of :meth:`SqlRateLimiter.hit`.

Rows count while ``expires_at > now``; expired ones are ignored at once and deleted
later by a background sweep. On SQLite, where there are no row locks, every writing
transaction starts with ``BEGIN IMMEDIATE``: it takes the database's single write lock
before reading anything (waiting up to the busy timeout), so the workers of
``gateway serve --workers N`` sharing one file are serialised by SQLite itself; within a
process an asyncio lock queues them first, so they never poll in SQLite's busy handler.
Times come from ``clock`` (Unix seconds): keep hosts NTP-synced.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.ratelimit import policy
from gateway.ratelimit.base import (
    DEFAULT_LEASE_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    Decision,
    Lease,
    Limits,
    RateLimiterUnavailable,
    Status,
)
from gateway.ratelimit.degraded import BackendGuard
from storage.models import RateLimitBucket

logger = logging.getLogger("gateway.ratelimit")

BUCKETS: sa.Table = RateLimitBucket.__table__  # type: ignore[attr-defined]
_c = BUCKETS.c
_UNIQUE = ["user_id", "bucket_type", "bucket_key"]
SWEEP_GRACE_SECONDS = 60.0
"""Rows are deleted this long after expiring, so the sweep never races a live call."""


def _user_id(subject: str) -> str:
    return subject if len(subject) <= 64 else hashlib.sha256(subject.encode()).hexdigest()


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime) -> float:
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _seconds_or_none(moment: datetime | None) -> float | None:
    return None if moment is None else _seconds(moment)


def _unreachable(exc: BaseException) -> bool:
    """True for "the database is down" errors, which the fail_open policy answers."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                        OSError, asyncio.TimeoutError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class SqlRateLimiter:
    """Sliding-log limiter in the gateway's database (PostgreSQL or SQLite)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        fail_open: bool = True,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.time,
        sweep_interval: float = 60.0,
    ) -> None:
        self.lease_seconds = lease_seconds
        self.window_seconds = window_seconds
        self.guard = BackendGuard("sql", fail_open=fail_open)
        self._dialect = engine.dialect.name
        if self._dialect not in ("postgresql", "sqlite"):
            raise ValueError(f"the sql rate limiter supports PostgreSQL and SQLite, "
                             f"not {self._dialect}")
        if self._dialect == "postgresql":
            # Each statement must see rows committed by the acquire that held the lock
            # before us; that is READ COMMITTED, whatever the engine's default.
            engine = engine.execution_options(isolation_level="READ COMMITTED")
        self._engine = engine
        self._insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        self._local_lock = asyncio.Lock() if self._dialect == "sqlite" else None
        self._clock = clock
        self._slot_prefix = uuid.uuid4().hex[:12] + "-"
        self._ids = itertools.count()
        self._sweep_interval = sweep_interval
        self._next_sweep = clock() + sweep_interval
        self._sweeper: asyncio.Task[int] | None = None

    @property
    def backend_errors(self) -> int:
        """Database calls that failed (connection refused, timeout...)."""
        return self.guard.errors

    @asynccontextmanager
    async def _transaction(self, *, writes: bool = True) -> AsyncIterator[AsyncConnection]:
        serialise: AbstractAsyncContextManager[Any] = self._local_lock or nullcontext()
        async with serialise, self._engine.connect() as conn, conn.begin():
            if writes and self._local_lock is not None:
                # SQLite: the driver's own BEGIN is deferred and sent only before the first
                # write, so the count a decision reads would be protected only as long as
                # every transaction happened to start with a write. The driver's COMMIT /
                # ROLLBACK still end this transaction.
                await conn.exec_driver_sql("BEGIN IMMEDIATE")
            yield conn

    async def _lock(self, conn: AsyncConnection, user_id: str, until: float) -> None:
        """Upsert the subject's lock row: ON CONFLICT DO UPDATE holds its row lock."""
        stmt = self._insert(BUCKETS).values(
            id=uuid.uuid4(), user_id=user_id, bucket_type="lock", bucket_key="",
            request_count=0, value=0.0, expires_at=_at(until))
        await conn.execute(stmt.on_conflict_do_update(
            index_elements=_UNIQUE, set_={"expires_at": stmt.excluded.expires_at}))

    async def acquire(self, subject: str, limits: Limits, estimated_tokens: int) -> Decision:
        """Take a slot, count a request and reserve tokens, all or nothing."""
        estimated = max(0, int(estimated_tokens))
        slot_id = f"{self._slot_prefix}{next(self._ids)}"
        self._maybe_sweep()
        try:
            async with self._transaction() as conn:
                now = self._clock()
                user_id = _user_id(subject)
                await self._lock(conn, user_id, now + self.window_seconds)
                decision = await self._decide(conn, user_id, subject, slot_id, limits,
                                              estimated, now)
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("acquire", exc)
            return self.guard.acquire(subject, limits, estimated, slot_id)
        self.guard.succeeded()
        return decision

    async def _usage(self, conn: AsyncConnection, user_id: str,
                     now: float) -> tuple[int, int, float, float | None, float | None,
                                          float | None]:
        """(in use, requests, tokens, oldest request, newest request, newest token entry)."""
        is_request = _c.request_count > 0
        stmt = (
            sa.select(
                _c.bucket_type,
                sa.func.count(),
                sa.func.sum(_c.request_count),
                sa.func.sum(_c.value),
                sa.func.min(sa.case((is_request, _c.expires_at))),
                sa.func.max(sa.case((is_request, _c.expires_at))),
                sa.func.max(_c.expires_at),
            )
            .where(_c.user_id == user_id, _c.bucket_type.in_(("window", "concurrent")),
                   _c.expires_at > _at(now))
            .group_by(_c.bucket_type)
        )
        in_use, requests, tokens = 0, 0, 0.0
        oldest = newest = newest_tokens = None
        for kind, count, request_sum, value_sum, first, last, last_any in await conn.execute(
                stmt):
            if kind == "concurrent":
                in_use = count
            else:
                requests, tokens = int(request_sum or 0), float(value_sum or 0.0)
                oldest, newest = _seconds_or_none(first), _seconds_or_none(last)
                newest_tokens = _seconds_or_none(last_any)
        return in_use, requests, tokens, oldest, newest, newest_tokens

    async def _decide(self, conn: AsyncConnection, user_id: str, subject: str, slot_id: str,
                      limits: Limits, estimated: int, now: float) -> Decision:
        in_use, used_requests, used_tokens, oldest, newest, newest_tokens = await self._usage(
            conn, user_id, now)
        window = self.window_seconds
        tokens_used = round(used_tokens)
        if estimated > limits.tokens_per_minute:
            verdict: str | None = "too_large"
        else:
            verdict = policy.first_exceeded(limits, estimated, in_use, used_requests,
                                            tokens_used)
        if verdict is None:
            expiry = now + window
            await conn.execute(sa.insert(BUCKETS).values([
                {"id": uuid.uuid4(), "user_id": user_id, "bucket_type": "window",
                 "bucket_key": slot_id, "request_count": 1, "value": float(estimated),
                 "expires_at": _at(expiry)},
                {"id": uuid.uuid4(), "user_id": user_id, "bucket_type": "concurrent",
                 "bucket_key": slot_id, "request_count": 1, "value": float(estimated),
                 "expires_at": _at(now + self.lease_seconds)},
            ]))
            requests = policy.window_state(limits.requests_per_minute, used_requests + 1,
                                           expiry, now)
            tokens = policy.window_state(limits.tokens_per_minute, tokens_used + estimated,
                                         expiry, now)
            return policy.admitted(limits, requests, tokens, in_use + 1,
                                   Lease(subject, slot_id, estimated))
        requests = policy.window_state(limits.requests_per_minute, used_requests, newest, now)
        tokens = policy.window_state(limits.tokens_per_minute, tokens_used, newest_tokens, now)
        if verdict == "too_large":
            return policy.too_large(limits, estimated, requests, tokens, in_use, window)
        if verdict == "concurrent":
            return policy.concurrent_rejection(limits, requests, tokens, in_use)
        if verdict == "requests":
            retry = policy.requests_retry_after(oldest, now, window)
        else:
            entries = await conn.execute(
                sa.select(_c.expires_at, _c.value)
                .where(_c.user_id == user_id, _c.bucket_type == "window",
                       _c.expires_at > _at(now))
                .order_by(_c.expires_at))
            retry = policy.tokens_retry_after(
                ((_seconds(at), value) for at, value in entries), used_tokens,
                estimated, limits.tokens_per_minute, now, window)
        return policy.rejected(limits, verdict, retry, requests, tokens, in_use)

    async def release(self, lease: Lease, actual_tokens: int) -> None:
        """Free the slot and settle the reservation with the real usage; idempotent."""
        actual = max(0, int(actual_tokens))
        user_id = _user_id(lease.subject)
        mine = (_c.user_id == user_id, _c.bucket_key == lease.slot_id)
        try:
            async with self._transaction() as conn:
                now = self._clock()
                freed = await conn.execute(
                    sa.delete(BUCKETS).where(*mine, _c.bucket_type == "concurrent")
                    .returning(_c.id))
                held = freed.first() is not None
                # Setting (not adding) the amount is what makes a second release harmless.
                settled = await conn.execute(
                    sa.update(BUCKETS)
                    .where(*mine, _c.bucket_type == "window", _c.expires_at > _at(now))
                    .values(value=float(actual)).returning(_c.id))
                if settled.first() is None and held and actual > lease.reserved_tokens:
                    # The call outlived the window: charge its usage beyond the estimate now.
                    await conn.execute(self._insert(BUCKETS).values(
                        id=uuid.uuid4(), user_id=user_id, bucket_type="window",
                        bucket_key=lease.slot_id + ":x", request_count=0,
                        value=float(actual - lease.reserved_tokens),
                        expires_at=_at(now + self.window_seconds),
                    ).on_conflict_do_nothing(index_elements=_UNIQUE))
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("release", exc)
            return
        self.guard.succeeded()

    async def renew(self, leases: Iterable[Lease]) -> None:
        """Extend still-held leases in one statement; reclaimed slots stay reclaimed."""
        leases = list(leases)
        if not leases:
            return
        try:
            async with self._transaction() as conn:
                now = self._clock()
                await conn.execute(
                    sa.update(BUCKETS)
                    .where(_c.user_id.in_({_user_id(lease.subject) for lease in leases}),
                           _c.bucket_type == "concurrent",
                           _c.bucket_key.in_([lease.slot_id for lease in leases]),
                           _c.expires_at > _at(now))
                    .values(expires_at=_at(now + self.lease_seconds)))
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("renew", exc)
            return
        self.guard.succeeded()

    async def status(self, subject: str, limits: Limits) -> Status:
        """Report usage and in-flight calls without consuming (nor locking) anything."""
        try:
            async with self._transaction(writes=False) as conn:
                now = self._clock()
                in_use, used_requests, used_tokens, _, newest, newest_tokens = (
                    await self._usage(conn, _user_id(subject), now))
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("status", exc)
            raise RateLimiterUnavailable("the rate limiter database is unreachable") from exc
        self.guard.succeeded()
        return Status(
            policy.window_state(limits.requests_per_minute, used_requests, newest, now),
            policy.window_state(limits.tokens_per_minute, round(used_tokens), newest_tokens,
                                now),
            limits.concurrent_requests, in_use)

    async def hit(self, key: str, limit: int, window_seconds: float) -> tuple[bool, float]:
        """Count one attempt against ``limit`` per sliding window; (allowed, retry_after)."""
        user_id = _user_id("hit:" + key)
        try:
            async with self._transaction() as conn:
                now = self._clock()
                await self._lock(conn, user_id, now + window_seconds)
                count, oldest = (await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(_c.expires_at))
                    .where(_c.user_id == user_id, _c.bucket_type == "hit",
                           _c.expires_at > _at(now)))).one()
                if count < limit:
                    await conn.execute(sa.insert(BUCKETS).values(
                        id=uuid.uuid4(), user_id=user_id, bucket_type="hit",
                        bucket_key=f"{self._slot_prefix}{next(self._ids)}", request_count=1,
                        value=0.0, expires_at=_at(now + window_seconds)))
                    result = (True, 0.0)
                else:
                    first = _seconds_or_none(oldest)
                    result = (False, window_seconds if first is None else max(0.0, first - now))
        except Exception as exc:
            if not _unreachable(exc):
                raise
            self.guard.failed("hit", exc)
            return self.guard.hit()
        self.guard.succeeded()
        return result

    def _maybe_sweep(self) -> None:
        """Start the periodic deletion of long-expired rows, off the caller's path."""
        now = self._clock()
        if now < self._next_sweep or (self._sweeper and not self._sweeper.done()):
            return
        self._next_sweep = now + self._sweep_interval
        self._sweeper = asyncio.get_running_loop().create_task(self.sweep())

    async def sweep(self) -> int:
        """Delete rows expired for over a minute, every kind at once; returns the count."""
        cutoff = _at(self._clock() - SWEEP_GRACE_SECONDS)
        try:
            async with self._transaction() as conn:
                result = await conn.execute(sa.delete(BUCKETS).where(_c.expires_at < cutoff))
        except Exception as exc:  # a background chore: never let it crash the loop
            logger.warning("rate limiter sweep failed: %r", exc)
            return 0
        return result.rowcount

    async def aclose(self) -> None:
        """Wait for a running sweep; the engine belongs to the caller."""
        if self._sweeper is not None:
            await asyncio.gather(self._sweeper, return_exceptions=True)
