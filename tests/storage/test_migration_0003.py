"""Migration 0003 (conversations, conversation_id on calls) on a database holding data:
existing calls belong to no conversation, downgrade removes the table and column and keeps
every other row, and upgrading again is exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from storage import models
from storage.migrate import alembic_config, upgrade
from tests.conftest import postgres_database, run_sync
from tests.storage.test_migration_0002 import NOW, USER_ID, columns, counts, diff, fill, run


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0003_up_and_down_keeps_rows(backend: str, tmp_path: Path) -> None:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'm.db'}" if backend == "sqlite"
           else postgres_database("m0003"))
    run_sync(upgrade, url, "0002")
    run(url, fill)

    run_sync(upgrade, url, "0003")
    # Later revisions add more; that the head matches the models is checked at the end.
    assert "conversation_id" in run(url, lambda c: columns(c, "inference_requests"))
    requests = models.InferenceRequest.__table__
    conversations = models.Conversation.__table__
    assert run(url, lambda c: c.execute(
        sa.select(requests.c.conversation_id)).scalar_one()) is None
    cid = uuid.uuid4()
    run(url, lambda c: c.execute(conversations.insert().values(
        id=cid, user_id=USER_ID, title="Old chat", created_at=NOW, updated_at=NOW)))
    run(url, lambda c: c.execute(sa.update(requests).values(conversation_id=cid)))

    run_sync(command.downgrade, alembic_config(url), "0002")
    assert "conversation_id" not in run(url, lambda c: columns(c, "inference_requests"))
    assert "conversations" not in run(url, lambda c: sa.inspect(c).get_table_names())
    assert run(url, counts) == (1, 1, 1)

    run_sync(upgrade, url)
    assert run(url, diff) == []
    assert run(url, counts) == (1, 1, 1)
