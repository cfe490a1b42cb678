"""The async engine and session factory, built once in the app lifespan."""

from __future__ import annotations

import os
from typing import Any

import orjson
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession


def build_engine(url: str, *, pool_size: int = 10, echo: bool = False,
                 connect_timeout: float | None = None) -> AsyncEngine:
    """Create the engine; SQLite gets a private file, WAL, a busy timeout and foreign keys.
    ``connect_timeout`` bounds each new PostgreSQL connection (asyncpg's default is 60 s)."""
    # orjson for JSON columns (messages, parameters, tool calls): the writer serialises
    # thousands of them per second.
    kwargs: dict[str, Any] = {"echo": echo, "json_serializer": _json_dumps,
                              "json_deserializer": orjson.loads}
    if url.startswith("sqlite"):
        _create_private_sqlite_file(url)
        # Several processes (gateway serve --workers N) write to one file: a writer that
        # finds the lock taken waits up to 30 s for it instead of failing at once.
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
        if connect_timeout is not None:
            kwargs["connect_args"] = {"timeout": connect_timeout}
    engine = create_async_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        # The writer's executemany becomes one multi-row INSERT per statement instead of a
        # step per row. Each step releases the GIL in the aiosqlite thread, and getting it
        # back from a busy event loop takes up to the 5 ms switch interval: per row, that
        # capped the writer near a few hundred rows/s when the loop was saturated.
        engine.sync_engine.dialect.use_insertmanyvalues_wo_returning = True
    return engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _create_private_sqlite_file(url: str) -> None:
    """Create a missing database file 0600 before SQLite creates it 0644.

    SQLite gives its -wal and -shm files the database file's mode, so they stay private
    too. An empty file is a valid empty database.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        fd = os.open(database, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except (FileExistsError, FileNotFoundError):  # there already, or no directory to hold it
        return
    try:
        os.fchmod(fd, 0o600)  # os.open's mode went through the umask
    finally:
        os.close(fd)


# Transactions: the driver's legacy mode sends BEGIN (deferred) only before a write, so a
# transaction's reads before its first write run outside it. That suits two processes
# writing at once: a transaction never holds a read snapshot when it asks for the write
# lock, which SQLite would refuse at once (SQLITE_BUSY, no busy wait) had another process
# written since. Code that must read and write under the lock starts its transaction with
# BEGIN IMMEDIATE (the SQL rate limiter does).
def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
