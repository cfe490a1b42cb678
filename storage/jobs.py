"""Queries for legacy ``/inference`` jobs: submit, claim under a lease, renew, finish, cancel.

A job is an ``inference_requests`` row with ``source='legacy'``. Its life:

- ``pending`` → ``processing`` by :meth:`JobStore.claim` (``attempts + 1``, the claiming
  process's token in ``lease_owner``, ``lease_expires_at`` in the future). On PostgreSQL
  the candidate is picked with ``FOR UPDATE SKIP LOCKED``; on SQLite (one writer at a
  time) the UPDATE re-checks the status, so two claimers can never both win.
- A ``processing`` row whose lease expired (its process died) is claimable again.
- The final write (:meth:`JobStore.finish`) is fenced on ``lease_owner`` and on
  ``completed_at IS NULL``, and adds the usage counters in the same transaction, so a
  job completes, and is counted, at most once. ``lease_owner`` is kept afterwards: it
  names the process that ran the job.
- A user's cancel of a running job sets ``status='cancelled'`` only; the process running
  it notices, stops the call and records what was produced (still fenced).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from storage.models import ApiKey, InferenceRequest, SubscriptionPlan, User, utcnow
from storage.paging import newest_first, page_of
from storage.records import CallRecord
from storage.writer import usage_upserts

T = InferenceRequest.__table__
FINAL = ("completed", "failed", "cancelled")
STATUSES = ("pending", "processing", *FINAL)
PREVIEW_CHARS = 300
# What a job's status view shows (the prompt cut to a preview): GET /inference lists these.
VIEW_COLUMNS = (T.c.id, T.c.status, T.c.model, T.c.source, T.c.created_at, T.c.started_at,
                T.c.completed_at, T.c.attempts, T.c.served_by, T.c.prompt_tokens,
                T.c.completion_tokens, T.c.total_tokens, T.c.tokens_estimated,
                T.c.processing_time_ms, T.c.time_to_first_token_ms, T.c.error,
                sa.func.substr(T.c.prompt, 1, PREVIEW_CHARS).label("prompt"))
CLAIM_TRIES = 5
# What the final write copies from ChatCall's row; identity, timing of the claim and the
# request itself stay as they are.
_RESULT_COLUMNS = ("provider", "upstream_model", "response", "tool_calls", "finish_reason",
                   "prompt_tokens", "completion_tokens", "total_tokens", "tokens_estimated",
                   "processing_time_ms", "time_to_first_token_ms", "error", "served_by",
                   "upstream_attempts", "cost_usd", "cached")


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job: what a worker needs to run it."""

    id: uuid.UUID
    user_id: uuid.UUID
    api_key_id: uuid.UUID | None
    request_id: str | None
    model: str
    messages: list[dict[str, Any]]
    parameters: dict[str, Any]
    attempts: int
    created_at: datetime

    def body(self) -> dict[str, Any]:
        """The job as an OpenAI chat-completions body, for ``parse_chat``."""
        return {**self.parameters, "model": self.model, "messages": self.messages}


@dataclass(frozen=True, slots=True)
class Owner:
    user: User
    plan: SubscriptionPlan
    key: ApiKey | None


class JobStore:
    """Every statement the job API and its workers run; one short transaction each."""

    def __init__(self, engine: AsyncEngine, *, clock: Callable[[], datetime] = utcnow) -> None:
        """``clock`` is the time leases are taken and checked by (tests move it by hand)."""
        self._engine = engine
        self._clock = clock

    async def submit(self, record: CallRecord) -> None:
        """Insert a new pending job (before the 202 is sent)."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(T), [record.values()])

    async def claim(self, owner: str, lease_seconds: float,
                    skip_users: list[uuid.UUID] | None = None) -> Job | None:
        """Take the oldest runnable job (pending, or processing with an expired lease)."""
        now = self._clock()
        runnable = sa.or_(T.c.status == "pending",
                          sa.and_(T.c.status == "processing", T.c.lease_expires_at < now))
        pick = sa.select(T.c.id).where(T.c.source == "legacy", runnable)
        if skip_users:
            pick = pick.where(T.c.user_id.not_in(skip_users))
        # SQLAlchemy renders no FOR UPDATE on SQLite; the re-check in the UPDATE covers it
        # there, and a claimer that lost the race tries the next candidate.
        pick = pick.order_by(T.c.created_at).limit(1).with_for_update(skip_locked=True)
        claim = (sa.update(T).where(T.c.id == sa.bindparam("job_id"), runnable)
                 .values(status="processing", lease_owner=owner,
                         lease_expires_at=now + timedelta(seconds=lease_seconds),
                         attempts=T.c.attempts + 1, started_at=now, completion_tokens=0,
                         updated_at=now)
                 .returning(T.c.id, T.c.user_id, T.c.api_key_id, T.c.request_id, T.c.model,
                            T.c.messages, T.c.parameters, T.c.attempts, T.c.created_at))
        row = None
        for _ in range(CLAIM_TRIES):
            async with self._engine.begin() as conn:
                job_id = (await conn.execute(pick)).scalar_one_or_none()
                if job_id is None:
                    return None
                row = (await conn.execute(claim, {"job_id": job_id})).first()
            if row is not None:
                break
        if row is None:
            return None
        return Job(id=row.id, user_id=row.user_id, api_key_id=row.api_key_id,
                   request_id=row.request_id, model=row.model, messages=list(row.messages),
                   parameters=dict(row.parameters or {}), attempts=row.attempts,
                   created_at=row.created_at)

    async def heartbeat(self, job_id: uuid.UUID, owner: str, lease_seconds: float,
                        completion_tokens: int) -> str:
        """Renew the lease and store progress: ``ok``, ``cancelled`` (by the user) or ``lost``."""
        now = self._clock()
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(T).where(T.c.id == job_id, T.c.lease_owner == owner,
                                   T.c.status == "processing")
                .values(lease_expires_at=now + timedelta(seconds=lease_seconds),
                        completion_tokens=completion_tokens, updated_at=now))
            if result.rowcount == 1:
                return "ok"
            row = (await conn.execute(
                sa.select(T.c.status, T.c.lease_owner, T.c.completed_at)
                .where(T.c.id == job_id))).first()
        if (row is not None and row.status == "cancelled" and row.lease_owner == owner
                and row.completed_at is None):
            return "cancelled"
        return "lost"

    async def finish(self, job: Job, owner: str, values: dict[str, Any], *,
                     attempts: int | None = None) -> str | None:
        """Record the outcome once, fenced by the lease; add usage. The stored status, or None.

        A job the user cancelled meanwhile stays ``cancelled`` whatever ``values`` say.
        """
        now = self._clock()
        update = {k: values[k] for k in _RESULT_COLUMNS if k in values}
        update.update(completed_at=values.get("completed_at") or now, updated_at=now,
                      lease_expires_at=None,
                      status=sa.case((T.c.status == "cancelled", "cancelled"),
                                     else_=values["status"]))
        if attempts is not None:
            update["attempts"] = attempts
        async with self._engine.begin() as conn:
            row = (await conn.execute(
                sa.update(T).where(T.c.id == job.id, T.c.lease_owner == owner,
                                   T.c.status.in_(("processing", "cancelled")),
                                   T.c.completed_at.is_(None))
                .values(**update).returning(T.c.status))).first()
            if row is None:
                return None
            usage_row = {**values, "status": row.status, "user_id": job.user_id,
                         "model": job.model, "created_at": job.created_at}
            for stmt in usage_upserts(conn.dialect.name, [usage_row]):
                await conn.execute(stmt)
        return row.status

    async def requeue(self, job_id: uuid.UUID, owner: str, *, count_attempt: bool,
                      note: str | None = None) -> bool:
        """Put a job this process holds back to ``pending``; False if it no longer holds it."""
        values: dict[str, Any] = {
            "status": "pending", "lease_owner": None, "lease_expires_at": None,
            "started_at": None, "completion_tokens": 0, "updated_at": self._clock()}
        if not count_attempt:
            values["attempts"] = T.c.attempts - 1
        if note is not None:
            values["error"] = note
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(T).where(T.c.id == job_id, T.c.lease_owner == owner,
                                   T.c.status == "processing").values(**values))
        return result.rowcount == 1

    async def cancel(self, job_id: uuid.UUID, user_id: uuid.UUID) -> str | None:
        """Cancel the user's job: ``cancelled``, ``stopping`` (it is running), the final
        status it already had, or None when the user has no such request."""
        now = self._clock()
        mine = (T.c.id == job_id, T.c.user_id == user_id)
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.update(T).where(*mine, T.c.status == "pending")
                .values(status="cancelled", completed_at=now, updated_at=now,
                        error="Cancelled by the user before it started."))
            if result.rowcount == 1:
                return "cancelled"
            # If its process died (lease expired) nobody will record it: it ends here.
            result = await conn.execute(
                sa.update(T).where(*mine, T.c.status == "processing")
                .values(status="cancelled", updated_at=now,
                        completed_at=sa.case((T.c.lease_expires_at < now, now), else_=None)))
            if result.rowcount == 1:
                return "stopping"
            return (await conn.execute(sa.select(T.c.status).where(*mine))).scalar_one_or_none()

    async def page(self, user_id: uuid.UUID, statuses: tuple[str, ...], limit: int,
                   after: uuid.UUID | None = None) -> tuple[list[sa.Row[Any]], bool] | None:
        """The user's jobs newest first, keyset-paginated on (created_at, id) after the job
        ``after``; (rows, has_more), or None when ``after`` is not one of their jobs."""
        mine = (T.c.user_id == user_id, T.c.source == "legacy")
        stmt = sa.select(*VIEW_COLUMNS).where(*mine)
        if statuses:
            stmt = stmt.where(T.c.status.in_(statuses))
        async with self._engine.connect() as conn:
            anchor = None
            if after is not None:
                at = (await conn.execute(sa.select(T.c.created_at).where(
                    T.c.id == after, *mine))).scalar_one_or_none()
                if at is None:
                    return None
                anchor = (at, after)
            stmt = newest_first(stmt, T.c.created_at, T.c.id, anchor, limit)
            rows = list((await conn.execute(stmt)).all())
        return page_of(rows, limit)

    async def owner(self, user_id: uuid.UUID, api_key_id: uuid.UUID | None) -> Owner | None:
        """The submitting user, their current plan and the key used (if it still exists)."""
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            row = (await session.exec(
                select(User, SubscriptionPlan)
                .join(SubscriptionPlan, SubscriptionPlan.name == User.subscription_tier)
                .where(User.id == user_id))).first()
            if row is None:
                return None
            key = await session.get(ApiKey, api_key_id) if api_key_id is not None else None
            return Owner(user=row[0], plan=row[1], key=key)
