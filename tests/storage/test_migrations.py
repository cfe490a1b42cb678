"""Migrations upgrade an empty database on SQLite and PostgreSQL to exactly the models."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from storage import models  # noqa: F401  (the tables)
from storage.engine import build_engine
from storage.migrate import upgrade
from tests.conftest import postgres_database, run_sync


def _inspect(url: str) -> tuple[list, list[str], list[tuple]]:
    async def run() -> tuple[list, list[str], list[tuple]]:
        engine = build_engine(url)
        try:
            async with engine.connect() as conn:
                def compare(sync_conn: sa.Connection) -> tuple[list, list[str]]:
                    ctx = MigrationContext.configure(sync_conn, opts={"compare_type": True})
                    diff = compare_metadata(ctx, SQLModel.metadata)
                    return diff, sa.inspect(sync_conn).get_table_names()
                diff, tables = await conn.run_sync(compare)
                plans = (await conn.execute(sa.text(
                    "SELECT name, requests_per_minute, concurrent_requests, tokens_per_minute "
                    "FROM subscription_plans ORDER BY price_monthly"))).all()
                return diff, tables, [tuple(p) for p in plans]
        finally:
            await engine.dispose()
    return run_sync(asyncio.run, run())


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upgrade_empty_database_matches_models(backend: str, tmp_path: Path) -> None:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}" if backend == "sqlite"
           else postgres_database("migrate"))
    run_sync(upgrade, url)
    diff, tables, plans = _inspect(url)
    assert diff == [], diff
    assert {"users", "api_keys", "subscription_plans", "inference_requests", "usage_daily",
            "rate_limit_buckets", "audit_logs", "alembic_version"} <= set(tables)
    assert plans == [("free", 20, 2, 40_000), ("pro", 300, 10, 1_000_000),
                     ("enterprise", 3000, 100, 10_000_000)]
    run_sync(upgrade, url)  # idempotent: a second upgrade is a no-op
