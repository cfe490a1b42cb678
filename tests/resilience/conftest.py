"""Fixtures for the end-to-end resilience tests: misbehaving upstreams, a hand-driven clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from storage.migrate import upgrade
from tests.conftest import Account, register, run_sync, set_plan
from tests.resilience.support import FakeClock
from tests.servers import FakeUpstream, GatewayServer


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One migrated SQLite database, for tests whose subject is not storage (breakers,
    balancing): they run once, not once per database backend."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('resilience') / 'gateway.db'}"
    run_sync(upgrade, url)
    return url


@pytest.fixture(scope="module")
def fault() -> Iterator[FakeUpstream]:
    """This module's own upstream: its per-model scripts cannot leak into other tests."""
    server = FakeUpstream()
    yield server
    server.stop()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def customer(gateway: GatewayServer, plan: str = "enterprise") -> Account:
    """A fresh user (enterprise by default: plan limits are not what most tests test)."""
    acct = register(gateway.url)
    set_plan(gateway, acct.user_id, plan)
    return acct
