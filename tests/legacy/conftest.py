"""Fixtures for the legacy API tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.migrate import upgrade
from tests.conftest import postgres_database, run_sync


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated database of its own, so no other gateway's workers take its jobs."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    else:
        url = postgres_database("legacy")
    run_sync(upgrade, url)
    return url
