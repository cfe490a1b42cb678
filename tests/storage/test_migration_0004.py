"""Migration 0004 (password reset tokens, session generation) on a database holding data:
existing users keep their sessions (generation 0), downgrade drops the table and columns and
keeps every row, and upgrading again gives exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from storage import models
from storage.migrate import alembic_config, upgrade
from tests.conftest import postgres_database, run_sync
from tests.storage.test_migration_0002 import (
    NOW,
    USER_ID,
    USERS,
    columns,
    counts,
    diff,
    fill,
    run,
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0004_up_and_down_keeps_rows(backend: str, tmp_path: Path) -> None:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'm.db'}" if backend == "sqlite"
           else postgres_database("m0004"))
    run_sync(upgrade, url, "0001")
    run(url, fill)
    run_sync(upgrade, url, "0004")
    user = models.User.__table__
    tokens = models.PasswordResetToken.__table__
    # Existing users: generation 0 (their sessions stay valid), never changed a password.
    assert run(url, lambda c: tuple(c.execute(sa.select(
        user.c.session_generation, user.c.password_changed_at)).one())) == (0, None)
    # An insert that leaves the generation out (an older process still running) gets 0.
    run(url, lambda c: c.execute(USERS.insert().values(
        id=uuid.uuid4(), email="new@example.com", password_hash="x", subscription_tier="free",
        status="active", created_at=NOW, updated_at=NOW)))
    assert run(url, lambda c: c.execute(sa.select(user.c.session_generation).where(
        user.c.email == "new@example.com")).scalar_one()) == 0
    run(url, lambda c: c.execute(tokens.insert().values(
        id=uuid.uuid4(), user_id=USER_ID, token_hash="t" * 64, expires_at=NOW + timedelta(
            minutes=30), created_at=NOW)))

    run_sync(command.downgrade, alembic_config(url), "0003")
    assert "password_reset_tokens" not in run(url, lambda c: sa.inspect(c).get_table_names())
    assert not {"session_generation", "password_changed_at"} & run(
        url, lambda c: columns(c, "users"))
    assert run(url, counts) == (2, 1, 1)

    run_sync(upgrade, url)
    assert run(url, diff) == []
    assert run(url, counts) == (2, 1, 1)
