"""What a user or an API key has spent, from the stored calls (seeds the budget ledgers)."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.models import InferenceRequest

CALLS: sa.Table = InferenceRequest.__table__  # type: ignore[attr-defined]
NANO = 1_000_000_000


async def stored_spend(engine: AsyncEngine, user_id: uuid.UUID, *,
                       api_key_id: uuid.UUID | None = None, start: datetime | None = None,
                       end: datetime | None = None) -> int:
    """The cost of the user's (or one of their keys') calls created in [start, end), in
    nano-USD. Each row is rounded to a nano-dollar before the sum, as a settlement is, so
    the total is an exact integer (the sum of whole numbers in a double is exact well
    past any budget)."""
    c = CALLS.c
    where = [c.user_id == user_id]
    if api_key_id is not None:
        where.append(c.api_key_id == api_key_id)
    if start is not None:
        where.append(c.created_at >= start)
    if end is not None:
        where.append(c.created_at < end)
    stmt = sa.select(sa.func.sum(sa.func.round(c.cost_usd * NANO))).where(*where)
    async with engine.connect() as conn:
        total = (await conn.execute(stmt)).scalar()
    return int(total or 0)
