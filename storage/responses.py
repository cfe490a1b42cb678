"""The Responses API's stored answers: one row per answer created with ``store`` (the
default), read back by ``GET /v1/responses/{id}`` and walked by ``previous_response_id``.

Every query is scoped to the caller's ``user_id``: another user's response is not found,
exactly like an unknown one. Everything runs on the primary, never a replica: a retrieve
or a chained call right after an answer must find it.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.models import StoredResponse

R = StoredResponse.__table__


class ChainTooDeep(Exception):
    """A ``previous_response_id`` chain longer than the limit."""


class ResponseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def save(self, row: dict[str, Any]) -> None:
        """Insert one answer (``row``: the table's columns, ``metadata`` by its name)."""
        async with self._engine.begin() as conn:
            await conn.execute(sa.insert(R).values(**row))

    async def get(self, user_id: uuid.UUID, response_id: str) -> sa.Row[Any] | None:
        async with self._engine.connect() as conn:
            return (await conn.execute(sa.select(R).where(
                R.c.id == response_id, R.c.user_id == user_id))).first()

    async def delete(self, user_id: uuid.UUID, response_id: str) -> bool:
        """The answer alone: a later answer chained to it keeps its own items, and a call
        naming it as ``previous_response_id`` is then refused as unknown."""
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(R).where(
                R.c.id == response_id, R.c.user_id == user_id))
        return result.rowcount == 1

    async def chain(self, user_id: uuid.UUID, response_id: str,
                    max_depth: int) -> list[sa.Row[Any]] | None:
        """``response_id`` and the answers before it, oldest first; None when any link is
        missing (deleted, never stored, another user's). Raises ``ChainTooDeep`` past
        ``max_depth`` answers: one primary-key read each, bounded."""
        rows: list[sa.Row[Any]] = []
        seen: set[str] = set()
        next_id: str | None = response_id
        async with self._engine.connect() as conn:
            while next_id is not None:
                if len(rows) >= max_depth or next_id in seen:
                    raise ChainTooDeep
                seen.add(next_id)
                row = (await conn.execute(sa.select(R).where(
                    R.c.id == next_id, R.c.user_id == user_id))).first()
                if row is None:
                    return None
                rows.append(row)
                next_id = row.previous_response_id
        rows.reverse()
        return rows
