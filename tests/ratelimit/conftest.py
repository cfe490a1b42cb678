"""Fixtures for the limiter suite: every backend behind one factory, real servers only.

Redis and PostgreSQL come from ``GATEWAY_TEST_REDIS_URL`` / ``GATEWAY_TEST_POSTGRES_URL``
(``eval "$(bash .ci/services.sh)"``); tests needing them skip when they are unset, or
fail under ``GATEWAY_TEST_REQUIRE_SERVICES=1`` (CI). Each run uses its own Redis key
prefix and its own PostgreSQL database, dropped at the end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import SQLModel

from gateway.ratelimit import MemoryRateLimiter, RateLimiter
from storage.models import RateLimitBucket

BACKENDS = ["memory", "redis", "sql-sqlite", "sql-postgres"]


class FakeClock:
    """A clock the test moves by hand; starts at a realistic Unix time."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


LimiterFactory = Callable[..., Awaitable[RateLimiter]]


def server_url(variable: str) -> str:
    """The URL in ``variable``, or skip (fail when CI requires the servers)."""
    url = os.environ.get(variable)
    if not url:
        reason = f'{variable} is unset: run eval "$(bash .ci/services.sh)"'
        if os.environ.get("GATEWAY_TEST_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (GATEWAY_TEST_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    return server_url("GATEWAY_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def postgres_admin_url() -> str:
    return server_url("GATEWAY_TEST_POSTGRES_URL")


async def _create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.create_all,
                            tables=[RateLimitBucket.__table__])  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
async def postgres_url(postgres_admin_url: str) -> AsyncIterator[str]:
    """A fresh database holding ``rate_limit_buckets``, dropped after the session."""
    import asyncpg

    admin = make_url(postgres_admin_url)
    name = f"ratelimit_test_{uuid.uuid4().hex[:12]}"
    dsn = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    url = admin.set(database=name).render_as_string(hide_password=False)
    engine = create_async_engine(url)
    await _create_tables(engine)
    await engine.dispose()
    yield url
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def postgres_engine(postgres_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(postgres_url, pool_size=20, max_overflow=40)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file holding ``rate_limit_buckets``, shared by the session."""
    path: Path = tmp_path_factory.mktemp("ratelimit") / "limiter.db"
    url = f"sqlite+aiosqlite:///{path}"
    engine = create_async_engine(url)
    await _create_tables(engine)
    await engine.dispose()
    return url


@pytest.fixture(scope="session")
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlite_url)
    yield engine
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def backend_resource(backend: str, request: pytest.FixtureRequest) -> Any:
    """The server a backend needs (resolved here, outside the event loop), or None."""
    server_fixture = {"redis": "redis_url", "sql-sqlite": "sqlite_engine",
                      "sql-postgres": "postgres_engine"}.get(backend)
    return request.getfixturevalue(server_fixture) if server_fixture else None


@pytest.fixture
async def make_limiter(backend: str, backend_resource: Any) -> AsyncIterator[LimiterFactory]:
    """``await make_limiter(clock=..., lease_seconds=..., window_seconds=...)``.

    ``clock=None`` means the backend's real clock (Redis ``TIME`` for redis).
    """
    created: list[RateLimiter] = []

    async def make(*, clock: Callable[[], float] | None = None, **kwargs: Any) -> RateLimiter:
        if clock is not None:
            kwargs["clock"] = clock
        limiter: RateLimiter
        if backend == "memory":
            limiter = MemoryRateLimiter(**kwargs)
        elif backend == "redis":
            from gateway.ratelimit.redis_backend import RedisRateLimiter

            limiter = RedisRateLimiter.from_url(
                backend_resource, key_prefix=f"rltest-{uuid.uuid4().hex[:10]}", **kwargs)
        else:
            from gateway.ratelimit.sql_backend import SqlRateLimiter

            limiter = SqlRateLimiter(backend_resource, **kwargs)
        created.append(limiter)
        return limiter

    yield make
    for limiter in created:
        await limiter.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def subject() -> str:
    """A subject no other test uses, so runs never see each other's counters."""
    return f"user-{uuid.uuid4().hex}"
