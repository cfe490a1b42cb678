"""Account abuse end to end (SQLite, PostgreSQL): registration floods, password guessing,
common passwords, and caching of /auth answers."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from storage.models import User
from tests.conftest import SECRET, make_settings
from tests.servers import GatewayServer

MAX_DELAY = 0.4  # account-wide slow-down of 0.05, 0.1, 0.2, 0.4 s from 2, 4, 8, 16 failures
PASSWORD = "correct horse 42"


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[GatewayServer]:
    """A gateway with the default registration limit that believes X-Forwarded-For."""
    settings = make_settings(tmp_path_factory.mktemp("abuse"), database_url,
                             trust_forwarded=True, registrations_per_ip=10,
                             login_attempts_per_account=2, login_delay_max_seconds=MAX_DELAY)
    gateway = GatewayServer(create_app(settings))
    yield gateway
    gateway.stop()


def address() -> str:
    """A client address no other test uses (the gateway reads X-Forwarded-For's first)."""
    a, b, c = uuid.uuid4().bytes[:3]
    return f"10.{a}.{b}.{c}, 127.0.0.1"


def email() -> str:
    return f"abuse-{uuid.uuid4().hex[:10]}@example.com"


def stored(server: GatewayServer, *emails: str) -> int:
    async def run() -> int:
        async with server.state.engine.connect() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(User)
                                       .where(User.email.in_(emails)))).scalar_one()
    return server.run(run())


def register(server: GatewayServer, ip: str, mail: str | None = None,
             password: str = PASSWORD) -> httpx.Response:
    return httpx.post(server.url + "/auth/register", headers={"X-Forwarded-For": ip},
                      json={"email": mail or email(), "password": password})


def login(server: GatewayServer, ip: str, mail: str, password: str) -> httpx.Response:
    return httpx.post(server.url + "/auth/login", headers={"X-Forwarded-For": ip},
                      json={"email": mail, "password": password})


def test_thirty_registrations_from_one_address(server: GatewayServer) -> None:
    flood = address()
    emails = [email() for _ in range(30)]
    answers = [register(server, flood, mail) for mail in emails]
    assert [r.status_code for r in answers] == [201] * 10 + [429] * 20
    refused = answers[10]
    assert refused.json()["error"]["code"] == "too_many_registrations"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 3000 < int(refused.headers["retry-after"]) <= 3600
    assert int(refused.headers["retry-after-ms"]) > 3_000_000
    assert stored(server, *emails[:10]) == 10 and stored(server, *emails[10:]) == 0
    assert register(server, address()).status_code == 201  # another address is unaffected


def test_invalid_registrations_do_not_use_up_the_quota(server: GatewayServer) -> None:
    ip = address()
    for _ in range(12):
        assert register(server, ip, password="short").status_code == 400
    assert all(register(server, ip).status_code == 201 for _ in range(10))
    assert register(server, ip).status_code == 429


def test_guessing_from_one_address_does_not_lock_out_the_owner(server: GatewayServer) -> None:
    mail, attacker, owner = email(), address(), address()
    assert register(server, owner, mail).status_code == 201
    codes = [login(server, attacker, mail, f"wrong guess {i}!").status_code for i in range(12)]
    assert codes == [401] * 10 + [429] * 2
    refused = login(server, attacker, mail, PASSWORD)  # the right password, wrong address
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    assert refused.json()["error"]["code"] == "too_many_login_attempts"

    started = time.monotonic()
    r = login(server, owner, mail, PASSWORD)
    assert r.status_code == 200, r.text
    assert r.json()["user"]["email"] == mail
    assert time.monotonic() - started >= MAX_DELAY / 8  # slowed (10 failures), not locked


def test_guessing_from_many_addresses_slows_but_never_locks(server: GatewayServer) -> None:
    mail, owner = email(), address()
    assert register(server, owner, mail).status_code == 201
    for i in range(18):  # past the top step; each address stays under its own limit
        assert login(server, address(), mail, f"wrong guess {i}!").status_code == 401
    started = time.monotonic()
    r = login(server, owner, mail, PASSWORD)
    assert r.status_code == 200, r.text
    assert time.monotonic() - started >= MAX_DELAY


@pytest.mark.parametrize("password", ["password123", "Password123", "QWERTY12345"])
def test_common_passwords_are_refused(server: GatewayServer, password: str) -> None:
    mail = email()
    r = register(server, address(), mail, password)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "password"
    assert "common" in r.json()["error"]["message"]
    assert stored(server, mail) == 0


def test_create_user_cli_refuses_common_passwords(tmp_path: Path) -> None:
    env = {"GATEWAY_DATA_DIR": str(tmp_path), "GATEWAY_JWT_SECRET": SECRET,
           "GATEWAY_KEY_HASH_SECRET": SECRET + "k", "GATEWAY_BCRYPT_ROUNDS": "4",
           "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "create-user",
                          "cli@example.com", "--password", "password123"],
                         env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    assert "common" in run.stderr and not run.stdout


def test_every_auth_answer_says_no_store(server: GatewayServer) -> None:
    ip, mail = address(), email()
    created = register(server, ip, mail)
    token, key = created.json()["token"], created.json()["apiKey"]
    session = {"Authorization": f"Bearer {token}"}
    answers = {
        "register": created,
        "login": login(server, ip, mail, PASSWORD),
        "login 401": login(server, ip, mail, "wrong guess 1!"),
        "register 400": register(server, ip, password="password123"),
        "register 409": register(server, ip, mail),
        "me": httpx.get(server.url + "/auth/me", headers=session),
        "me 401": httpx.get(server.url + "/auth/me"),
        "keys": httpx.get(server.url + "/auth/keys", headers=session),
        "create key": httpx.post(server.url + "/auth/keys", headers=session, json={}),
        "keys 403": httpx.get(server.url + "/auth/keys", headers={"X-API-Key": key}),
        "bad json": httpx.post(server.url + "/auth/login", content=b"{nope",
                               headers={"content-type": "application/json"}),
        "unknown path": httpx.get(server.url + "/auth/nothing-here"),
        "wrong method": httpx.get(server.url + "/auth/login"),
        "too large": httpx.post(server.url + "/auth/login",
                                content=b" " * (server.state.settings.max_body_bytes + 1),
                                headers={"content-type": "application/json"}),
    }
    expected = {"register": 201, "login": 200, "login 401": 401, "register 400": 400,
                "register 409": 409, "me": 200, "me 401": 401, "keys": 200,
                "create key": 201, "keys 403": 403, "bad json": 400, "unknown path": 404,
                "wrong method": 405, "too large": 413}
    assert {name: r.status_code for name, r in answers.items()} == expected
    assert {name: r.headers.get("cache-control") for name, r in answers.items()} == dict.fromkeys(
        answers, "no-store")
    for name, r in answers.items():
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}, name
