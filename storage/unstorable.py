"""Rows the database refuses: telling them apart from a database that is unavailable, and
the part of such a row that can still be stored."""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa

# PostgreSQL's INTEGER; SQLite takes more, but a count beyond this is garbage anyway.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
# SQLSTATE classes of errors caused by the values sent, not by the server's state:
# 22 data exception (too long, out of range, NUL byte, bad encoding), 23 integrity.
_ROW_SQLSTATES = ("22", "23")
MARK = "payload not stored"


def is_row_error(exc: BaseException) -> bool:
    """True when the rows sent are at fault (bad values), False when the database is
    (unreachable, locked, restarting): the first kind is split and stripped, the second
    retried as it is."""
    seen: set[int] = set()
    stack: list[tuple[BaseException | None, bool]] = [(exc, False)]
    while stack:
        err, in_statement = stack.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, sa.exc.IntegrityError | sa.exc.DataError
                      | sqlite3.IntegrityError | sqlite3.DataError):
            return True
        code = getattr(err, "sqlstate", None)
        if isinstance(code, str) and code[:2] in _ROW_SQLSTATES:
            return True
        # Raised while SQLAlchemy bound the values (orjson's nesting limit, an int SQLite
        # cannot hold, an unencodable string): nothing reached the database. The same
        # errors raised anywhere else are bugs, not bad rows.
        if in_statement and isinstance(err, TypeError | ValueError | OverflowError):
            return True
        inside = in_statement or isinstance(err, sa.exc.StatementError)
        stack += [(getattr(err, "orig", None), inside), (err.__cause__, inside),
                  (err.__context__, inside)]
    return False


def describe(exc: BaseException) -> str:
    """A short reason for logs and the stored mark: the driver's message, first line."""
    err: BaseException = getattr(exc, "orig", None) or exc
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def without_payload(table: sa.Table, row: dict[str, Any], reason: str) -> dict[str, Any]:
    """``row`` with its JSON payload dropped and every other value made storable.

    Strings lose NUL bytes and unencodable characters and are cut to their column's length,
    integers are clamped to INTEGER. Request rows say so in ``error``, audit rows in
    ``details``; the counters (tokens, status) are kept, so usage still counts the call.
    """
    out = dict(row)
    for column in table.columns:
        value = out.get(column.name)
        if isinstance(column.type, sa.JSON):
            if value is not None:
                out[column.name] = (None if column.nullable
                                   else [] if isinstance(value, list) else {})
        elif isinstance(value, str):
            value = value.replace("\x00", "").encode("utf-8", "replace").decode()
            length = getattr(column.type, "length", None)
            out[column.name] = value[:length] if length else value
        elif isinstance(value, int) and not isinstance(value, bool):
            out[column.name] = min(max(value, _INT_MIN), _INT_MAX)
    mark = f"[{MARK}: {reason}]"
    if "error" in table.c:
        previous = out.get("error")
        out["error"] = f"{mark} {previous}" if previous else mark
    elif "details" in table.c:
        out["details"] = {"writer": mark}
    return out
