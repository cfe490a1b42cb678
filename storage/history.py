"""Queries behind ``/history`` and ``/stats``: one user's requests and usage counters.

Every query is scoped to the caller's ``user_id``: another user's row is simply not found.
Reads go through the ``ReadEngine`` (a caught-up replica, else the primary); deletes are
writes and always go to the primary.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.models import InferenceRequest, UsageDaily
from storage.paging import like_pattern, newest_first, page_of
from storage.reads import ReadEngine

T = InferenceRequest.__table__
U = UsageDaily.__table__
PREVIEW_CHARS = 300

SUMMARY_COLUMNS = (T.c.id, T.c.conversation_id, T.c.source, T.c.model, T.c.status,
                   T.c.created_at, T.c.started_at, T.c.completed_at, T.c.prompt_tokens,
                   T.c.completion_tokens, T.c.total_tokens,
                   T.c.tokens_estimated, T.c.processing_time_ms, T.c.time_to_first_token_ms,
                   T.c.finish_reason, T.c.error, T.c.attempts, T.c.served_by, T.c.cost_usd,
                   T.c.cached)
USAGE_COUNTERS = ("requests", "succeeded", "failed", "cancelled", "prompt_tokens",
                  "completion_tokens", "processing_time_ms", "time_to_first_token_ms",
                  "ttft_samples", "cost_usd")


@dataclass(frozen=True, slots=True)
class HistoryFilter:
    """Filters of ``GET /history``; ``None`` means no filter. ``until`` is exclusive."""

    model: str | None = None
    statuses: tuple[str, ...] = ()
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None
    # Calls of a conversation are its turns (/conversations), not API calls: left out
    # unless asked for.
    conversations: bool = False


class HistoryStore:
    def __init__(self, engine: AsyncEngine, reads: ReadEngine | None = None) -> None:
        self._engine = engine
        self._reads = reads or ReadEngine(engine)

    async def page(self, user_id: uuid.UUID, filters: HistoryFilter, limit: int,
                   after: tuple[datetime, uuid.UUID] | None = None
                   ) -> tuple[list[sa.Row[Any]], bool]:
        """Newest first, keyset-paginated on (created_at, id); returns (rows, has_more)."""
        stmt = sa.select(*SUMMARY_COLUMNS,
                         sa.func.substr(T.c.prompt, 1, PREVIEW_CHARS).label("prompt_preview"),
                         sa.func.substr(T.c.response, 1, PREVIEW_CHARS)
                         .label("response_preview")).where(T.c.user_id == user_id)
        if not filters.conversations:
            stmt = stmt.where(T.c.conversation_id.is_(None))
        if filters.model:
            stmt = stmt.where(T.c.model == filters.model)
        if filters.statuses:
            stmt = stmt.where(T.c.status.in_(filters.statuses))
        if filters.source:
            stmt = stmt.where(T.c.source == filters.source)
        if filters.since is not None:
            stmt = stmt.where(T.c.created_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(T.c.created_at < filters.until)
        if filters.text:
            stmt = stmt.where(T.c.prompt.ilike(like_pattern(filters.text), escape="\\"))
        stmt = newest_first(stmt, T.c.created_at, T.c.id, after, limit)

        async def read(conn: AsyncConnection) -> list[sa.Row[Any]]:
            return list((await conn.execute(stmt)).all())

        return page_of(await self._reads.run(read), limit)

    async def item(self, user_id: uuid.UUID, item_id: uuid.UUID) -> sa.Row[Any] | None:
        """One of the user's requests, every column."""
        stmt = sa.select(T).where(T.c.id == item_id, T.c.user_id == user_id)

        async def read(conn: AsyncConnection) -> sa.Row[Any] | None:
            return (await conn.execute(stmt)).first()

        return await self._reads.run(read)

    async def delete(self, user_id: uuid.UUID, item_id: uuid.UUID) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(
                sa.delete(T).where(T.c.id == item_id, T.c.user_id == user_id))
        return result.rowcount == 1

    async def usage(self, user_id: uuid.UUID, first: date, last: date
                    ) -> list[dict[str, Any]]:
        """The user's usage_daily rows for ``first``..``last`` (inclusive)."""
        stmt = (sa.select(U.c.day, U.c.model, *(U.c[name] for name in USAGE_COUNTERS))
                .where(U.c.user_id == user_id, U.c.day >= first, U.c.day <= last)
                .order_by(U.c.day, U.c.model))
        async def read(conn: AsyncConnection) -> list[dict[str, Any]]:
            return [dict(row._mapping) for row in await conn.execute(stmt)]

        return await self._reads.run(read)
