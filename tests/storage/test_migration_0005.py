"""Migration 0005: the free plan gets the offline embedding model next to the demo chat
model (and loses it on downgrade), on SQLite and PostgreSQL; a list without the demo is
left alone."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command

from storage import models
from storage.engine import build_engine
from storage.migrate import alembic_config, upgrade
from tests.conftest import postgres_database, run_sync

PLANS = models.SubscriptionPlan.__table__


def run(url: str, fn: Any) -> Any:
    async def go() -> Any:
        engine = build_engine(url)
        try:
            async with engine.begin() as conn:
                return await conn.run_sync(fn)
        finally:
            await engine.dispose()
    return run_sync(asyncio.run, go())


def plan_models(url: str, name: str) -> list[str]:
    return run(url, lambda c: c.execute(sa.select(PLANS.c.features)
                                        .where(PLANS.c.name == name)).scalar_one()["models"])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_0005_up_and_down(backend: str, tmp_path: Path) -> None:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'm.db'}" if backend == "sqlite"
           else postgres_database("m0005"))
    run_sync(upgrade, url, "0004")
    before = plan_models(url, "free")
    assert "gateway-demo-embed" not in before
    run_sync(upgrade, url, "0005")
    assert plan_models(url, "free") == [*before, "gateway-demo-embed"]
    assert plan_models(url, "pro") == ["*"]
    run_sync(command.downgrade, alembic_config(url), "0004")
    assert plan_models(url, "free") == before

    # An operator's list without the demo chat model does not get the demo embeddings.
    def custom(conn: sa.Connection) -> None:
        conn.execute(sa.update(PLANS).where(PLANS.c.name == "free")
                     .values(features={"models": ["gpt-4o-mini"], "history_days": 7}))
    run(url, custom)
    run_sync(upgrade, url, "0005")
    assert plan_models(url, "free") == ["gpt-4o-mini"]
