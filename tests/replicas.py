"""A real streaming replica for tests: its URL, direct SQL on either server, waiting for it
to catch up, and a recorder of the statements an engine sends."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.migrate import upgrade
from tests.conftest import postgres_database, run_sync, skip_or_fail

READ_URL = os.environ.get("GATEWAY_TEST_POSTGRES_READ_URL")

def plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def sql(url: str, statement: str, *args: Any) -> list[asyncpg.Record]:
    """One statement on a fresh connection of its own (observing the servers directly)."""
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(plain(url))
        try:
            return await conn.fetch(statement, *args)
        finally:
            await conn.close()
    return run_sync(asyncio.run, go())


def caught_up(primary: str, replica: str, timeout: float = 30.0) -> None:
    """Wait until the replica has replayed everything the primary flushed so far."""
    target = sql(primary, "SELECT pg_current_wal_flush_lsn() AS lsn")[0]["lsn"]
    deadline = time.monotonic() + timeout
    while True:
        try:
            rows = sql(replica, "SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn AS done", target)
            if rows[0]["done"]:
                return
        except asyncpg.InvalidCatalogNameError:  # the database is not replayed yet
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"the replica did not reach {target} in {timeout} s")
        time.sleep(0.02)


class Statements:
    """Every SQL statement one engine sends, recorded through SQLAlchemy's events."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.seen: list[str] = []
        self._lock = threading.Lock()
        event.listen(engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        with self._lock:
            self.seen.append(" ".join(statement.split()))

    def take(self) -> list[str]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen


def replicated_database(tag: str, *, migrate: bool = True) -> tuple[str, str]:
    """A fresh database on the primary (migrated), and its URL on the replica once there."""
    if not READ_URL:
        skip_or_fail("no PostgreSQL replica: set GATEWAY_TEST_POSTGRES_READ_URL "
                     "(.ci/services.sh starts one)")
    primary = postgres_database(tag)
    if migrate:
        run_sync(upgrade, primary)
    replica = READ_URL.rsplit("/", 1)[0] + "/" + primary.rsplit("/", 1)[1]
    caught_up(primary, replica)
    return primary, replica
