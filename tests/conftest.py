"""Shared fixtures: settings on SQLite or a real PostgreSQL, a running gateway, users."""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import Settings, load_settings
from storage.migrate import upgrade
from tests.servers import FakeUpstream, GatewayServer

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL")
# .ci/run sets this: there a missing server is a broken CI, not a reason to skip.
REQUIRE_SERVICES = os.environ.get("GATEWAY_TEST_REQUIRE_SERVICES") == "1"


def skip_or_fail(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (GATEWAY_TEST_REQUIRE_SERVICES=1)")
    pytest.skip(reason)
SECRET = "test-secret-" + "x" * 40
_counter = itertools.count()
T = TypeVar("T")


def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking code that may call asyncio.run(), even while this thread has a loop
    (Playwright's sync API keeps one running in the main thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def postgres_database(tag: str) -> str:
    """Create a fresh PostgreSQL database and return its async URL."""
    if not POSTGRES_URL:
        skip_or_fail("PostgreSQL not available: set GATEWAY_TEST_POSTGRES_URL "
                     "(.ci/services.sh starts one)")
    import asyncpg

    name = f"gw_{tag}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")

    async def create() -> None:
        conn = await asyncpg.connect(base)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_sync(asyncio.run, create())
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database: SQLite file, or a fresh database on the real PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'gateway.db'}"
    else:
        url = postgres_database("suite")
    run_sync(upgrade, url)
    return url


def make_settings(tmp_path: Path, database_url: str | None = None, **overrides: Any) -> Settings:
    """Settings for a test gateway: fast bcrypt, no demo pacing, fixed secrets."""
    values: dict[str, Any] = {
        "data_dir": tmp_path, "jwt_secret": SECRET, "key_hash_secret": SECRET + "k",
        "bcrypt_rounds": 4, "demo_delay_ms": 0, "migrate_on_start": False,
        "writer_flush_seconds": 0.02, "auth_cache_seconds": 0.0,
        # Every test registers from 127.0.0.1; the per-address limit has its own tests.
        "registrations_per_ip": 1_000_000,
    }
    if database_url:
        values["database_url"] = database_url
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    server = FakeUpstream()
    yield server
    server.stop()


# The shared gateway's fake upstreams fail on purpose, test after test: one try per call
# and breakers that never open keep each test's upstream calls its own. Retries and
# breakers are tested in tests/resilience, on gateways of their own.
ONE_TRY = {"max_retries": 0, "breaker_failures": 1_000_000}


@pytest.fixture(scope="session")
def gateway(database_url: str, upstream: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    """One running gateway per database backend, with fake OpenAI/Anthropic/Together upstreams."""
    providers = {
        "fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
                        "models": {"gpt-4o-mini": "gpt-4o-mini", "gpt-4o": "gpt-4o"},
                        "read_timeout": 2.0, **ONE_TRY},
        "fake-anthropic": {"kind": "anthropic", "base_url": upstream.url, "api_key": "sk-ant",
                           "models": {"claude-haiku": "claude-haiku-4-5"}, "read_timeout": 2.0,
                           **ONE_TRY},
        "fake-together": {"kind": "together", "base_url": upstream.url + "/v1",
                          "api_key": "tg", "models": {"llama-3-8b": "meta-llama/Llama-3-8b"},
                          "read_timeout": 2.0, **ONE_TRY},
    }
    settings = make_settings(tmp_path_factory.mktemp("gw"), database_url, providers=providers)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()


@dataclass
class Account:
    email: str
    password: str
    token: str
    api_key: str
    user_id: str


def register(base_url: str, plan: str | None = None, **kw: Any) -> Account:
    email = f"user{next(_counter)}-{uuid.uuid4().hex[:6]}@example.com"
    password = "correct horse 42"
    r = httpx.post(base_url + "/auth/register", json={"email": email, "password": password})
    assert r.status_code == 201, r.text
    body = r.json()
    return Account(email=email, password=password, token=body["token"],
                   api_key=body["apiKey"], user_id=body["user"]["id"])


def set_plan(gateway: GatewayServer, user_id: str, plan: str) -> None:
    gateway.run(gateway.state.accounts.set_plan(uuid.UUID(user_id), plan))


@pytest.fixture
def account(gateway: GatewayServer) -> Account:
    """A fresh user on the enterprise plan, so protocol tests do not trip plan limits."""
    acct = register(gateway.url)
    set_plan(gateway, acct.user_id, "enterprise")
    return acct
