"""storage/reads.py against a real streaming replica: reads see every commit made before they
began (by any engine, as another gateway instance would), and concurrent reads share one
query for the primary's position."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection

from storage.engine import build_engine
from storage.reads import RETRY_SECONDS, ReadEngine, parse_lsn
from tests.replicas import Statements, replicated_database, sql

ROUNDS = 30


@pytest.fixture(scope="module")
def databases() -> tuple[str, str]:
    primary, replica = replicated_database("reads", migrate=False)
    sql(primary, "CREATE TABLE marks (n integer PRIMARY KEY)")
    return primary, replica


def test_parse_lsn() -> None:
    assert parse_lsn("0/0") == 0
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848


def test_each_read_sees_the_commits_made_before_it_began(databases: tuple[str, str]) -> None:
    """Another instance commits, then this one reads at once: never stale, whichever
    server answers (the replica when it has replayed the commit within the wait)."""
    primary_url, replica_url = databases

    async def scenario() -> dict[str, int]:
        other = build_engine(primary_url)  # another gateway instance's writes
        primary, replica = build_engine(primary_url), build_engine(replica_url)
        reads = ReadEngine(primary, replica, max_wait=0.1)
        served: dict[str, int] = {"primary": 0, "replica": 0}

        async def count(conn: AsyncConnection) -> tuple[int, str]:
            n = (await conn.execute(sa.text("SELECT count(*) FROM marks"))).scalar_one()
            return n, "replica" if conn.engine is replica else "primary"

        try:
            async with other.connect() as conn:
                base = (await conn.execute(sa.text("SELECT count(*) FROM marks"))).scalar_one()
            for n in range(base + 1, base + ROUNDS + 1):
                async with other.begin() as conn:
                    await conn.execute(sa.text("INSERT INTO marks VALUES (:n)"), {"n": n})
                seen, server = await reads.run(count)
                assert seen == n, f"read {n} on the {server} saw {seen} rows"
                served[server] += 1
        finally:
            await reads.dispose()
            await primary.dispose()
            await other.dispose()
        return served

    served = asyncio.run(scenario())
    # A local replica replays a commit within milliseconds: most reads wait for it rather
    # than fall back (the rule is not "always the primary").
    assert served["replica"] > ROUNDS // 2, served


def test_a_replica_behind_the_read_sends_it_to_the_primary(
        databases: tuple[str, str]) -> None:
    primary_url, replica_url = databases
    sql(replica_url, "SELECT pg_wal_replay_pause()")
    try:
        sql(primary_url, "INSERT INTO marks SELECT coalesce(max(n), 0) + 1 FROM marks")
        expected = sql(primary_url, "SELECT count(*) AS n FROM marks")[0]["n"]

        async def scenario() -> tuple[int, bool]:
            primary, replica = build_engine(primary_url), build_engine(replica_url)
            reads = ReadEngine(primary, replica, max_wait=0.05)

            async def count(conn: AsyncConnection) -> tuple[int, bool]:
                n = (await conn.execute(sa.text("SELECT count(*) FROM marks"))).scalar_one()
                return n, conn.engine is replica

            try:
                return await reads.run(count)
            finally:
                await reads.dispose()
                await primary.dispose()

        assert asyncio.run(scenario()) == (expected, False)
    finally:
        sql(replica_url, "SELECT pg_wal_replay_resume()")


def test_concurrent_reads_share_one_position_query(databases: tuple[str, str]) -> None:
    primary_url, replica_url = databases

    async def scenario() -> tuple[list[Any], list[str]]:
        primary, replica = build_engine(primary_url), build_engine(replica_url)
        statements = Statements(primary)
        reads = ReadEngine(primary, replica, max_wait=1.0)

        async def one(conn: AsyncConnection) -> Any:
            return (await conn.execute(sa.text("SELECT count(*) FROM marks"))).scalar_one()

        try:
            results = await asyncio.gather(*(reads.run(one) for _ in range(20)))
        finally:
            await reads.dispose()
            await primary.dispose()
        return results, statements.take()

    results, sent = asyncio.run(scenario())
    assert len(set(results)) == 1
    # All twenty began before the first query went out, so one answers them all.
    assert len([s for s in sent if "pg_current_wal_flush_lsn" in s]) == 1, sent


def test_a_failed_replica_is_skipped_for_a_while(databases: tuple[str, str]) -> None:
    primary_url, _ = databases
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    now = [100.0]

    async def scenario() -> list[tuple[int, int]]:
        primary = build_engine(primary_url)
        dead = build_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{port}/postgres")
        attempts = []
        event.listen(dead.sync_engine, "do_connect", lambda *_: attempts.append(1))
        reads = ReadEngine(primary, dead, clock=lambda: now[0])

        async def count(conn: AsyncConnection) -> int:
            return (await conn.execute(sa.text("SELECT count(*) FROM marks"))).scalar_one()

        seen = []
        try:
            for step in (0.0, RETRY_SECONDS - 0.1, 0.2):  # fail, skip, try again
                now[0] += step
                seen.append((await reads.run(count), len(attempts)))
        finally:
            await reads.dispose()
            await primary.dispose()
        return seen

    expected = sql(primary_url, "SELECT count(*) AS n FROM marks")[0]["n"]
    assert asyncio.run(scenario()) == [(expected, 1), (expected, 1), (expected, 2)]
