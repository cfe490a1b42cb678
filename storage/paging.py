"""Lists the API pages through: newest first, keyset-paginated, and searched with LIKE."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa


def like_pattern(text: str) -> str:
    """``%text%`` with LIKE's wildcards escaped (escape character ``\\``)."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def newest_first(stmt: sa.Select[Any], at: sa.ColumnElement[Any], key: sa.ColumnElement[Any],
                 after: tuple[datetime, Any] | None, limit: int) -> sa.Select[Any]:
    """``stmt``'s rows newest first by (``at``, ``key``), from just past the row ``after``
    stood at, one more than ``limit``: ``page_of`` tells from it whether more follow."""
    if after is not None:
        when, last = after
        stmt = stmt.where(sa.or_(at < when, sa.and_(at == when, key < last)))
    return stmt.order_by(at.desc(), key.desc()).limit(limit + 1)


def page_of(rows: list[sa.Row[Any]], limit: int) -> tuple[list[sa.Row[Any]], bool]:
    """(the page, whether more follow) from the rows of ``newest_first``."""
    return rows[:limit], len(rows) > limit
