"""Migration 0002 (admin flag, served_by, upstream_attempts) on a database holding data:
upgrade fills existing rows in, downgrade removes the columns and keeps every row, and the
result of upgrading again is exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from storage import models
from storage.engine import build_engine
from storage.migrate import alembic_config, upgrade
from tests.conftest import postgres_database, run_sync

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
USER_ID, KEY_ID, REQUEST_ID = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

# The three tables as revision 0001 left them (only the columns the rows below fill).
USERS = sa.table("users", sa.column("id", sa.Uuid()), sa.column("email", sa.String()),
                 sa.column("password_hash", sa.String()),
                 sa.column("subscription_tier", sa.String()), sa.column("status", sa.String()),
                 sa.column("created_at", sa.DateTime(timezone=True)),
                 sa.column("updated_at", sa.DateTime(timezone=True)))
KEYS = sa.table("api_keys", sa.column("id", sa.Uuid()), sa.column("user_id", sa.Uuid()),
                sa.column("name", sa.String()), sa.column("key_hash", sa.String()),
                sa.column("key_prefix", sa.String()), sa.column("key_suffix", sa.String()),
                sa.column("status", sa.String()),
                sa.column("created_at", sa.DateTime(timezone=True)),
                sa.column("updated_at", sa.DateTime(timezone=True)))
REQUESTS = sa.table(
    "inference_requests", sa.column("id", sa.Uuid()), sa.column("user_id", sa.Uuid()),
    sa.column("source", sa.String()), sa.column("model", sa.String()),
    sa.column("provider", sa.String()), sa.column("messages", sa.JSON()),
    sa.column("parameters", sa.JSON()), sa.column("status", sa.String()),
    sa.column("prompt_tokens", sa.Integer()), sa.column("completion_tokens", sa.Integer()),
    sa.column("total_tokens", sa.Integer()), sa.column("tokens_estimated", sa.Boolean()),
    sa.column("attempts", sa.Integer()), sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("updated_at", sa.DateTime(timezone=True)))


def run(url: str, fn: Any) -> Any:
    """``fn(sync_connection)`` in one committed transaction on a fresh engine."""
    async def go() -> Any:
        engine = build_engine(url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()
    return run_sync(asyncio.run, go())


def fill(conn: sa.Connection) -> None:
    conn.execute(USERS.insert().values(
        id=USER_ID, email="old@example.com", password_hash="x", subscription_tier="free",
        status="active", created_at=NOW, updated_at=NOW))
    conn.execute(KEYS.insert().values(
        id=KEY_ID, user_id=USER_ID, name="default", key_hash="h" * 64, key_prefix="gw-old",
        key_suffix="abcd", status="active", created_at=NOW, updated_at=NOW))
    conn.execute(REQUESTS.insert().values(
        id=REQUEST_ID, user_id=USER_ID, source="v1", model="gpt-4o-mini", provider="openai",
        messages=[{"role": "user", "content": "hi"}], parameters={}, status="completed",
        prompt_tokens=1, completion_tokens=2, total_tokens=3, tokens_estimated=False,
        attempts=0, created_at=NOW, updated_at=NOW))


def columns(conn: sa.Connection, table: str) -> set[str]:
    return {c["name"] for c in sa.inspect(conn).get_columns(table)}


def counts(conn: sa.Connection) -> tuple[int, int, int]:
    return tuple(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                 for t in (USERS, KEYS, REQUESTS))  # type: ignore[return-value]


def diff(conn: sa.Connection) -> list:
    return compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                            SQLModel.metadata)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0002_up_and_down_keeps_rows(backend: str, tmp_path: Path) -> None:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'm.db'}" if backend == "sqlite"
           else postgres_database("m0002"))
    run_sync(upgrade, url, "0001")
    run(url, fill)

    run_sync(upgrade, url, "0002")
    # Later revisions add more; that the head matches the models is checked at the end.
    assert "is_admin" in run(url, lambda c: columns(c, "users"))
    assert {"served_by", "upstream_attempts"} <= run(
        url, lambda c: columns(c, "inference_requests"))
    user = models.User.__table__
    requests = models.InferenceRequest.__table__
    # Existing rows: not an admin, nothing recorded about upstream attempts.
    assert run(url, lambda c: c.execute(sa.select(user.c.is_admin)).scalar_one()) is False
    assert run(url, lambda c: tuple(c.execute(
        sa.select(requests.c.served_by, requests.c.upstream_attempts)).one())) == (None, None)
    # An insert that leaves the flag out (an older process still running) gets the default.
    run(url, lambda c: c.execute(USERS.insert().values(
        id=uuid.uuid4(), email="new@example.com", password_hash="x", subscription_tier="free",
        status="active", created_at=NOW, updated_at=NOW)))
    assert run(url, lambda c: c.execute(sa.select(user.c.is_admin).where(
        user.c.email == "new@example.com")).scalar_one()) is False
    attempts = [{"target": "fault/down", "status": 503}, {"target": "fault/ok", "status": 200}]
    run(url, lambda c: c.execute(sa.update(user).values(is_admin=True)))
    run(url, lambda c: c.execute(sa.update(requests).values(
        served_by="fault/ok", upstream_attempts=attempts)))
    assert run(url, lambda c: tuple(c.execute(
        sa.select(requests.c.served_by, requests.c.upstream_attempts)).one())) == (
        "fault/ok", attempts)

    # Downgrade: the columns go, and no user, key or request goes with them.
    run_sync(command.downgrade, alembic_config(url), "0001")
    assert "is_admin" not in run(url, lambda c: columns(c, "users"))
    assert not {"served_by", "upstream_attempts"} & run(
        url, lambda c: columns(c, "inference_requests"))
    assert run(url, counts) == (2, 1, 1)

    run_sync(upgrade, url)
    assert run(url, diff) == []
    assert run(url, counts) == (2, 1, 1)
    assert run(url, lambda c: c.execute(sa.select(user.c.is_admin)
                                        .where(user.c.id == USER_ID)).scalar_one()) is False
