"""The job queries on real SQLite and PostgreSQL: claims, leases, fences, cancels."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.engine import build_engine
from storage.jobs import JobStore
from storage.models import InferenceRequest, UsageDaily, User, utcnow
from storage.records import CallRecord

T = InferenceRequest.__table__


class Clock:
    """Wall-clock time for the store, moved forward by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
async def engine(fresh_database: str) -> AsyncIterator[AsyncEngine]:
    engine = build_engine(fresh_database)
    yield engine
    await engine.dispose()


async def make_user(engine: AsyncEngine) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(sa.insert(User.__table__).values(
            id=user_id, email=f"{user_id.hex}@example.com", password_hash="x",
            subscription_tier="free", status="active", created_at=utcnow(),
            updated_at=utcnow()))
    return user_id


def job(user_id: uuid.UUID, **over: Any) -> CallRecord:
    now = utcnow()
    values: dict[str, Any] = {
        "id": uuid.uuid4(), "user_id": user_id, "api_key_id": None, "request_id": None,
        "source": "legacy", "model": "gateway-demo", "provider": "demo",
        "upstream_model": "gateway-demo", "messages": [{"role": "user", "content": "hi"}],
        "parameters": {}, "prompt": "user: hi", "status": "pending", "created_at": now,
        "updated_at": now, **over}
    return CallRecord(**values)


async def row(engine: AsyncEngine, job_id: uuid.UUID) -> sa.Row:
    async with engine.connect() as conn:
        return (await conn.execute(sa.select(T).where(T.c.id == job_id))).one()


async def usage(engine: AsyncEngine, user_id: uuid.UUID) -> tuple[int, int, int]:
    table = UsageDaily.__table__
    async with engine.connect() as conn:
        found = (await conn.execute(sa.select(
            sa.func.coalesce(sa.func.sum(table.c.requests), 0),
            sa.func.coalesce(sa.func.sum(table.c.succeeded), 0),
            sa.func.coalesce(sa.func.sum(table.c.cancelled), 0))
            .where(table.c.user_id == user_id))).one()
    return int(found[0]), int(found[1]), int(found[2])


async def test_claims_are_exclusive_and_oldest_first(engine: AsyncEngine) -> None:
    store = JobStore(engine)
    user = await make_user(engine)
    rows = [job(user, created_at=utcnow() + timedelta(milliseconds=i)) for i in range(10)]
    for r in rows:
        await store.submit(r)
    claims = await asyncio.gather(*(store.claim(f"w{i}", 30) for i in range(14)))
    got = [c.id for c in claims if c is not None]
    assert got and len(got) == len(set(got))
    rest = []
    while (claimed := await store.claim("late", 30)) is not None:
        rest.append(claimed.id)
    order = [r.id for r in rows]
    assert rest == sorted(rest, key=order.index)  # oldest first
    assert sorted(map(str, got + rest)) == sorted(map(str, order))  # each exactly once
    # Skipped users' jobs are left for later.
    other = await make_user(engine)
    await store.submit(job(other))
    assert await store.claim("w", 30, skip_users=[other]) is None
    assert (await store.claim("w", 30)).user_id == other


async def test_finish_is_fenced_and_counted_once(engine: AsyncEngine) -> None:
    store = JobStore(engine)
    user = await make_user(engine)
    data = job(user)
    await store.submit(data)
    claimed = await store.claim("me", 30)
    assert claimed is not None and claimed.attempts == 1
    assert await store.heartbeat(claimed.id, "me", 30, 7) == "ok"
    assert (await row(engine, claimed.id)).completion_tokens == 7
    assert await store.heartbeat(claimed.id, "someone-else", 30, 1) == "lost"
    done = {"status": "completed", "response": "hello", "prompt_tokens": 1,
            "completion_tokens": 2, "total_tokens": 3, "processing_time_ms": 5}
    assert await store.finish(claimed, "someone-else", done) is None
    assert await store.finish(claimed, "me", done) == "completed"
    assert await store.finish(claimed, "me", done) is None  # never twice
    stored = await row(engine, claimed.id)
    assert (stored.status, stored.response, stored.lease_owner) == ("completed", "hello", "me")
    assert await usage(engine, user) == (1, 1, 0)
    assert await store.cancel(claimed.id, user) == "completed"
    assert await store.cancel(claimed.id, uuid.uuid4()) is None  # not the owner's


async def test_expired_leases_are_reclaimed_and_the_old_owner_fenced_off(
        engine: AsyncEngine) -> None:
    clock = Clock()
    store = JobStore(engine, clock=clock)
    user = await make_user(engine)
    await store.submit(job(user))
    first = await store.claim("dead", 30)
    clock.advance(29.9)
    assert await store.claim("alive", 30) is None  # still leased
    clock.advance(0.2)
    second = await store.claim("alive", 30)
    assert second is not None and second.id == first.id and second.attempts == 2
    assert await store.heartbeat(first.id, "dead", 30, 0) == "lost"
    assert await store.finish(first, "dead", {"status": "completed"}) is None
    assert await store.finish(second, "alive", {"status": "completed"}) == "completed"
    assert await usage(engine, user) == (1, 1, 0)


async def test_requeue_and_cancel(engine: AsyncEngine) -> None:
    clock = Clock()
    store = JobStore(engine, clock=clock)
    user = await make_user(engine)
    await store.submit(job(user))
    claimed = await store.claim("me", 30)
    assert await store.requeue(claimed.id, "me", count_attempt=False)
    back = await row(engine, claimed.id)
    assert (back.status, back.attempts, back.lease_owner) == ("pending", 0, None)
    assert await store.cancel(claimed.id, user) == "cancelled"  # pending: final at once
    assert (await row(engine, claimed.id)).completed_at is not None
    assert await store.claim("me", 30) is None

    await store.submit(running := job(user))
    claimed = await store.claim("me", 30)
    assert await store.cancel(running.id, user) == "stopping"
    assert (await row(engine, claimed.id)).completed_at is None  # the worker records it
    assert await store.heartbeat(claimed.id, "me", 30, 3) == "cancelled"
    assert not await store.requeue(claimed.id, "me", count_attempt=False)
    assert await store.finish(claimed, "me", {"status": "completed",
                                              "completion_tokens": 3}) == "cancelled"
    assert await usage(engine, user) == (1, 0, 1)

    # A job whose process died is cancelled for good at once.
    await store.submit(orphan := job(user))
    await store.claim("dead", 30)
    clock.advance(31)
    assert await store.cancel(orphan.id, user) == "stopping"
    stored = await row(engine, orphan.id)
    assert stored.status == "cancelled" and stored.completed_at is not None
