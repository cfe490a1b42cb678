"""Exactness across real OS processes sharing one Redis, PostgreSQL or SQLite file."""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path

import pytest

WORKER = Path(__file__).with_name("acquire_worker.py")
PROCESSES, PER_PROCESS, LIMIT = 2, 25, 10


async def run_workers(backend: str, url: str) -> list[tuple[int, int]]:
    prefix, subject = f"rltest-{uuid.uuid4().hex[:10]}", f"user-{uuid.uuid4().hex}"
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), backend, url, prefix, subject, str(PER_PROCESS),
            str(LIMIT), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        for _ in range(PROCESSES)
    ]
    try:
        for proc in procs:  # wait until every worker is connected...
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 20)
            assert line.strip() == b"ready", line
        for proc in procs:  # ...then start them all at once
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        results = []
        for proc in procs:
            out, _ = await asyncio.wait_for(proc.communicate(), 20)
            assert proc.returncode == 0
            admitted, errors = out.split()
            results.append((int(admitted), int(errors)))
        return results
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.fixture(params=["redis", "sql-postgres", "sql-sqlite"])
def shared_server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(worker backend, URL) of a server or file several processes can share."""
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url")
    if request.param == "sql-sqlite":
        return "sql", request.getfixturevalue("sqlite_url")
    return "sql", request.getfixturevalue("postgres_url")


async def test_two_processes_admit_exactly_the_limit(shared_server: tuple[str, str]) -> None:
    results = await run_workers(*shared_server)
    assert [errors for _, errors in results] == [0] * PROCESSES
    assert sum(admitted for admitted, _ in results) == LIMIT
