"""DATABASE_READ_URL against a real streaming replica (.ci/services.sh starts one).

/history and /stats read the replica when it has replayed every write committed before the
read began, and the primary otherwise: a caller sees its own call with replay paused, a dead
replica degrades to the primary, and writes and job claims never reach the read engine.
"""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from gateway.app import create_app
from gateway.settings import ConfigError, load_settings
from storage.models import InferenceRequest
from tests.conftest import (
    Account,
    make_settings,
    register,
    set_plan,
)
from tests.legacy.support import auth, submit, wait_final
from tests.replicas import Statements, caught_up, replicated_database, sql
from tests.servers import GatewayServer

MAX_WAIT_MS = 100


def reading(statements: list[str], table: str) -> list[str]:
    """The views' reads of ``table`` (one user's rows), not the job runner's claims."""
    return [s for s in statements if s.startswith("SELECT") and f"FROM {table}" in s
            and f"{table}.user_id = " in s and "FOR UPDATE" not in s]


def looks(statements: list[str]) -> list[str]:
    """The read engine's checks of the replica's replay position."""
    return [s for s in statements if "pg_last_wal_replay_lsn" in s]


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def replica_log() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger("gateway.reads")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


@pytest.fixture(scope="module")
def databases() -> tuple[str, str]:
    return replicated_database("replica")


@pytest.fixture(scope="module")
def replicated(databases: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[GatewayServer]:
    primary, replica = databases
    settings = make_settings(tmp_path_factory.mktemp("replica"), primary,
                             database_read_url=replica,
                             read_replica_max_wait_ms=MAX_WAIT_MS)
    server = GatewayServer(create_app(settings))
    yield server
    server.stop()


@pytest.fixture
def recorded(replicated: GatewayServer) -> Iterator[tuple[Statements, Statements]]:
    """(primary, replica) statement recorders on the replicated gateway's two engines."""
    state = replicated.state
    assert state.reads.replica is not None
    primary, replica = Statements(state.engine), Statements(state.reads.replica)
    yield primary, replica
    event.remove(state.engine.sync_engine, "before_cursor_execute", primary._record)
    event.remove(state.reads.replica.sync_engine, "before_cursor_execute", replica._record)


def call(gateway: GatewayServer, account: Account) -> str:
    """One finished chat completion through the SDK, stored: its history id."""
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=account.api_key,
                           max_retries=0, timeout=30)
    answer = client.chat.completions.create(
        model="gateway-demo", messages=[{"role": "user", "content": "hello replica"}])
    assert answer.choices[0].message.content
    gateway.flush()  # the writer has committed the row on the primary

    async def stored() -> list[Any]:
        async with gateway.state.engine.connect() as conn:
            return list(await conn.execute(sa.select(InferenceRequest.id).where(
                InferenceRequest.user_id == uuid.UUID(account.user_id))))
    rows = gateway.run(stored())
    assert len(rows) == 1
    return str(rows[0][0])


def views(gateway: GatewayServer, account: Account, item: str) -> tuple[Any, Any, Any]:
    """What the caller sees: /history, /history/{id} and /stats, each a 200."""
    headers = auth(account.api_key)
    listing = httpx.get(gateway.url + "/history", headers=headers)
    detail = httpx.get(f"{gateway.url}/history/{item}", headers=headers)
    usage = httpx.get(gateway.url + "/stats", headers=headers)
    for response in (listing, detail, usage):
        assert response.status_code == 200, response.text
    return listing.json(), detail.json(), usage.json()


def assert_sees_its_call(gateway: GatewayServer, account: Account, item: str) -> None:
    listing, detail, usage = views(gateway, account, item)
    assert [row["id"] for row in listing["data"]] == [item]
    assert listing["data"][0]["status"] == "completed"
    assert detail["id"] == item and detail["messages"][0]["content"] == "hello replica"
    assert usage["totals"]["requests"] == 1 and usage["totals"]["succeeded"] == 1


def test_reads_are_served_by_a_caught_up_replica(
        replicated: GatewayServer, databases: tuple[str, str],
        recorded: tuple[Statements, Statements]) -> None:
    primary_db, replica_db = databases
    primary, replica = recorded
    account = register(replicated.url)
    item = call(replicated, account)
    caught_up(primary_db, replica_db)
    started = sql(replica_db, "SELECT now() AS t")[0]["t"]
    primary.take(), replica.take()

    assert_sees_its_call(replicated, account, item)

    on_replica, on_primary = replica.take(), primary.take()
    assert len(reading(on_replica, "inference_requests")) == 2  # the list and the item
    assert len(reading(on_replica, "usage_daily")) == 1
    assert not reading(on_primary, "inference_requests")
    assert not reading(on_primary, "usage_daily")
    assert [s for s in on_primary if "pg_current_wal_flush_lsn" in s]  # the rule's check
    # The replica server itself ran them: the last statement of the gateway's connection
    # there is the /stats query, sent after the test began.
    ran = sql(replica_db, "SELECT query FROM pg_stat_activity WHERE datname = $1 "
              "AND query_start >= $2 AND query LIKE '%FROM usage_daily%'",
              replica_db.rsplit("/", 1)[1], started)
    assert ran, "the replica ran no /stats query"


def test_a_caller_sees_its_own_call_while_replay_is_paused(
        replicated: GatewayServer, databases: tuple[str, str],
        recorded: tuple[Statements, Statements], replica_log: Records) -> None:
    primary_db, replica_db = databases
    primary, replica = recorded
    account = register(replicated.url)
    caught_up(primary_db, replica_db)
    sql(replica_db, "SELECT pg_wal_replay_pause()")
    try:
        deadline = time.monotonic() + 10
        while sql(replica_db, "SELECT pg_get_wal_replay_pause_state() AS s")[0]["s"] != "paused":
            assert time.monotonic() < deadline, "replay did not pause"
            time.sleep(0.01)
        item = call(replicated, account)
        # The call is on the primary and not on the replica: a stale read would miss it.
        assert not sql(replica_db, "SELECT id FROM inference_requests WHERE id = $1::uuid",
                       item)
        primary.take(), replica.take()

        assert_sees_its_call(replicated, account, item)
        first = replica.take()
        assert_sees_its_call(replicated, account, item)

        on_primary, on_replica = primary.take(), first + replica.take()
        assert len(reading(on_primary, "inference_requests")) == 4
        assert len(reading(on_primary, "usage_daily")) == 2
        assert not reading(on_replica, "inference_requests")
        assert not reading(on_replica, "usage_daily")
        # Once the replica is known to lag, a read looks once and goes on to the primary
        # rather than waiting for it again: one position check per read.
        assert len(looks(first)) >= 3
        assert len(looks(on_replica)) == len(looks(first)) + 3
        lagging = [m for m in replica_log.messages if "reads go to the primary" in m]
        assert len(lagging) == 1, replica_log.messages
    finally:
        sql(replica_db, "SELECT pg_wal_replay_resume()")

    caught_up(primary_db, replica_db)
    assert_sees_its_call(replicated, account, item)
    assert len(reading(replica.take(), "inference_requests")) == 2
    assert any("caught up again" in m for m in replica_log.messages), replica_log.messages


def test_writes_and_job_claims_never_touch_the_read_engine(
        replicated: GatewayServer, recorded: tuple[Statements, Statements]) -> None:
    primary, replica = recorded
    account = register(replicated.url)
    set_plan(replicated, account.user_id, "enterprise")
    login = httpx.post(replicated.url + "/auth/login",
                       json={"email": account.email, "password": account.password})
    assert login.status_code == 200, login.text
    key = httpx.post(replicated.url + "/auth/keys", json={"name": "second"},
                     headers=auth(login.json()["token"]))
    assert key.status_code == 201, key.text
    item = call(replicated, account)
    job = submit(replicated.url, key.json()["key"], model="gateway-demo", prompt="a job")
    assert wait_final(replicated.url, key.json()["key"], job)["status"] == "completed"
    listing = httpx.get(replicated.url + "/history", headers=auth(account.api_key))
    assert {row["id"] for row in listing.json()["data"]} == {item, job}
    deleted = httpx.delete(f"{replicated.url}/history/{job}", headers=auth(account.api_key))
    assert deleted.status_code == 200, deleted.text
    replicated.flush()

    on_replica, on_primary = replica.take(), primary.take()
    assert reading(on_replica, "inference_requests")  # the /history read above
    assert all(s.startswith("SELECT") and "FOR UPDATE" not in s for s in on_replica), \
        on_replica
    for write in ("INSERT INTO users", "INSERT INTO api_keys", "INSERT INTO inference_requests",
                  "INSERT INTO usage_daily", "FOR UPDATE SKIP LOCKED",
                  "DELETE FROM inference_requests"):
        assert any(write in s for s in on_primary), write


def test_a_dead_replica_degrades_to_the_primary(
        databases: tuple[str, str], tmp_path: Path, replica_log: Records) -> None:
    primary_db, _ = databases
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = f"postgresql://postgres@127.0.0.1:{port}/{primary_db.rsplit('/', 1)[1]}"
    gateway = GatewayServer(create_app(make_settings(tmp_path, primary_db,
                                                     database_read_url=dead)))
    try:
        account = register(gateway.url)
        item = call(gateway, account)
        assert_sees_its_call(gateway, account, item)
        assert_sees_its_call(gateway, account, item)
    finally:
        gateway.stop()
    failed = [m for m in replica_log.messages if "reads go to the primary" in m]
    assert len(failed) == 1 and "failed" in failed[0], replica_log.messages


def test_without_a_read_url_everything_reads_the_primary(tmp_path: Path) -> None:
    gateway = GatewayServer(create_app(make_settings(tmp_path, migrate_on_start=True)))
    try:
        assert gateway.state.reads.replica is None
        statements = Statements(gateway.state.engine)
        account = register(gateway.url)
        item = call(gateway, account)
        statements.take()
        assert_sees_its_call(gateway, account, item)
        seen = statements.take()
        assert len(reading(seen, "inference_requests")) == 2
        assert not [s for s in seen if "wal" in s.lower()]  # no replica, no position checks
    finally:
        gateway.stop()


def test_a_read_url_needs_postgresql_on_both_sides(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="database_read_url"):
        load_settings(data_dir=tmp_path, database_read_url="postgresql://h/db")  # SQLite
    with pytest.raises(ConfigError, match="database_read_url"):
        load_settings(data_dir=tmp_path, database_url="postgresql://h/db",
                      database_read_url="sqlite+aiosqlite:///x.db")
    monkeypatch.setenv("DATABASE_URL", "postgres://u@primary/db")
    monkeypatch.setenv("DATABASE_READ_URL", "postgres://u@replica/db")
    settings = load_settings(data_dir=tmp_path)
    assert settings.effective_database_read_url == "postgresql+asyncpg://u@replica/db"
    assert settings.read_replica_max_wait_ms == 100
    monkeypatch.setenv("GATEWAY_READ_REPLICA_MAX_WAIT_MS", "-1")
    with pytest.raises(ConfigError, match="read_replica_max_wait_ms"):
        load_settings(data_dir=tmp_path)

