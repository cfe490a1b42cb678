"""The embedded data directory is private: the directory 0700, the database (with its
-wal/-shm files) and the generated secrets 0600, whatever the umask."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from gateway.app import create_app
from gateway.datadir import ensure_secrets, prepare_data_dir
from gateway.settings import load_settings
from storage.engine import build_engine
from storage.migrate import upgrade
from tests.conftest import make_settings
from tests.processes import GatewayProcess, gateway_env
from tests.servers import GatewayServer

DATABASE_FILES = ("gateway.db", "gateway.db-wal", "gateway.db-shm")
SECRET_FILES = (".jwt_secret", ".key_hash_secret")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("GATEWAY_") or name in ("DATABASE_URL", "REDIS_URL"):
            monkeypatch.delenv(name)


def test_serve_on_a_fresh_data_dir_keeps_everything_private(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    env = gateway_env(data)
    del env["GATEWAY_JWT_SECRET"], env["GATEWAY_KEY_HASH_SECRET"]  # generated into data
    proc = GatewayProcess(env, tmp_path / "serve.log", umask=0o022)
    try:
        proc.wait_ready()
        r = httpx.post(proc.url + "/auth/register",
                       json={"email": "private@example.com", "password": "correct horse 42"})
        assert r.status_code == 201, r.text
        key = r.json()["apiKey"]
        for _ in range(3):
            r = httpx.post(proc.url + "/v1/chat/completions",
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": "gateway-demo",
                                 "messages": [{"role": "user", "content": "Hello"}]})
            assert r.status_code == 200, r.text
        # While the server runs, SQLite's -wal and -shm files exist beside the database.
        assert {name: oct(mode(data / name)) for name in DATABASE_FILES + SECRET_FILES} == {
            name: oct(0o600) for name in DATABASE_FILES + SECRET_FILES}
        assert oct(mode(data)) == oct(0o700)
        # The writer's crash spool holds prompts and answers: as private as the database.
        spool = data / "spool"
        assert oct(mode(spool)) == oct(0o700)
        assert {f.name: oct(mode(f)) for f in spool.iterdir()} == {
            f.name: oct(0o600) for f in spool.iterdir()}
        with closing(sqlite3.connect(data / "gateway.db")) as db:
            assert db.execute("SELECT count(*) FROM users").fetchone() == (1,)
    finally:
        proc.stop()


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
def test_a_created_data_dir_and_secrets_are_private_whatever_the_umask(
        tmp_path: Path, mask: int) -> None:
    data = tmp_path / "data"
    with umask(mask):
        ensure_secrets(load_settings(data_dir=data))
    assert oct(mode(data)) == oct(0o700)
    for name in SECRET_FILES:
        assert oct(mode(data / name)) == oct(0o600)


@pytest.mark.parametrize("mask", [0o000, 0o022])
async def test_the_engine_creates_the_database_private_and_sqlite_follows(
        tmp_path: Path, mask: int) -> None:
    with umask(mask):
        engine = build_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}")
        try:
            async with engine.begin() as conn:
                await conn.execute(text("CREATE TABLE t (x INTEGER)"))
                await conn.execute(text("INSERT INTO t VALUES (1)"))
            async with engine.connect() as conn:  # open: -wal and -shm exist
                assert (await conn.execute(text("SELECT x FROM t"))).scalar_one() == 1
                for name in DATABASE_FILES:
                    assert oct(mode(tmp_path / name)) == oct(0o600), name
        finally:
            await engine.dispose()


def loose_data_dir(path: Path, *extra: str) -> None:
    """A data dir as older versions left it: 0755, database files 0644."""
    path.mkdir()
    for name in (*DATABASE_FILES, *extra):
        (path / name).write_bytes(b"")
        os.chmod(path / name, 0o644)
    os.chmod(path, 0o755)


def test_the_default_data_dir_is_tightened_at_start_and_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    loose_data_dir(tmp_path / "data", "notes.txt")  # ./data is ours whatever it holds
    with caplog.at_level(logging.WARNING, logger="gateway"):
        prepare_data_dir(load_settings())
    data = tmp_path / "data"
    assert oct(mode(data)) == oct(0o700)
    assert [oct(mode(data / name)) for name in DATABASE_FILES] == [oct(0o600)] * 3
    assert oct(mode(data / "notes.txt")) == oct(0o644)  # not ours: untouched
    tightened = [r.getMessage() for r in caplog.records]
    assert len(tightened) == 4 and all("was open to other users" in m for m in tightened)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gateway"):
        prepare_data_dir(load_settings())
    assert caplog.records == []  # nothing more to say


def test_a_pointed_at_dir_holding_only_our_files_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "var-lib-gateway"
    loose_data_dir(data, ".jwt_secret")
    (data / "spool").mkdir(mode=0o755)
    os.chmod(data / "spool", 0o755)
    prepare_data_dir(load_settings(data_dir=data))
    assert oct(mode(data)) == oct(0o700)
    assert oct(mode(data / ".jwt_secret")) == oct(0o600)
    assert oct(mode(data / "spool")) == oct(0o700)  # a directory stays searchable


def test_a_pointed_at_shared_dir_is_left_alone_with_a_warning(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    loose_data_dir(shared, "index.html")
    with caplog.at_level(logging.WARNING, logger="gateway"):
        prepare_data_dir(load_settings(data_dir=shared))
    assert oct(mode(shared)) == oct(0o755)
    assert oct(mode(shared / "index.html")) == oct(0o644)
    assert [oct(mode(shared / name)) for name in DATABASE_FILES] == [oct(0o600)] * 3
    assert any("left as it is" in r.getMessage() for r in caplog.records)


def test_a_start_without_migration_tightens_an_old_data_dir(tmp_path: Path) -> None:
    """Production runs `gateway migrate` once; the workers' start still tightens."""
    data = tmp_path / "data"
    data.mkdir()
    upgrade(f"sqlite+aiosqlite:///{data / 'gateway.db'}")
    os.chmod(data / "gateway.db", 0o644)  # as older versions created it
    os.chmod(data, 0o755)
    server = GatewayServer(create_app(make_settings(data)))  # migrate_on_start=False
    try:
        assert httpx.get(server.url + "/ready").status_code == 200
        assert oct(mode(data)) == oct(0o700)
        assert [oct(mode(data / name)) for name in DATABASE_FILES] == [oct(0o600)] * 3
    finally:
        server.stop()
