"""Run the Alembic migrations shipped inside the package, on SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

# alembic announces each of its built-in autogenerate plugins at INFO while it is imported:
# seven lines at every start that say nothing about this database. Quieted before the import,
# whoever configured logging.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` (an async URL) to ``revision``; blocking."""
    command.upgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    await asyncio.to_thread(upgrade, url, revision)
