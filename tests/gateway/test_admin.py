"""The admin flag end to end: ``gateway set-admin`` grants and revokes it (with an audit
row), the running gateway's principal carries it, and ``GET /admin/upstreams`` answers
admins only, on SQLite and on PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import sqlalchemy as sa
from starlette.requests import HTTPConnection

from storage.models import AuditLog, User
from tests.conftest import Account, register
from tests.processes import gateway_env
from tests.servers import GatewayServer

UPSTREAMS = "/admin/upstreams"
UPSTREAM_FIELDS = {"name", "provider", "upstream", "state", "consecutive_failures",
                   "failures_to_open", "cooldown_seconds", "retry_in_seconds",
                   "opened_for_seconds", "opens", "in_flight", "max_retries"}
MODEL_FIELDS = {"id", "strategy", "targets", "fallbacks", "context_fallbacks"}


def set_admin(database_url: str, tmp_path: Path, email: str,
              *flags: str) -> subprocess.CompletedProcess[str]:
    """``gateway set-admin`` as an operator runs it, against the gateway's database."""
    env = gateway_env(tmp_path, DATABASE_URL=database_url)
    return subprocess.run([sys.executable, "-m", "gateway.cli", "set-admin", email, *flags],
                          env=env, capture_output=True, text=True, timeout=60)


def rows(gateway: GatewayServer, stmt: sa.Select) -> list[tuple]:
    async def run() -> list[tuple]:
        async with gateway.state.engine.connect() as conn:
            return [tuple(r) for r in await conn.execute(stmt)]
    return gateway.run(run())


def is_admin_flag(gateway: GatewayServer, acct: Account) -> bool:
    return rows(gateway, sa.select(User.is_admin)
                .where(User.id == uuid.UUID(acct.user_id)))[0][0]


def audits(gateway: GatewayServer, acct: Account) -> list[tuple]:
    return rows(gateway, sa.select(AuditLog.action, AuditLog.resource_id, AuditLog.details)
                .where(AuditLog.user_id == uuid.UUID(acct.user_id),
                       AuditLog.action.like("user.admin%"))
                .order_by(AuditLog.created_at))


def principal_is_admin(gateway: GatewayServer, credential: str) -> bool:
    """What the running gateway's authenticator makes of the credential right now."""
    conn = HTTPConnection({"type": "http", "headers": [
        (b"authorization", f"Bearer {credential}".encode())]})
    return gateway.run(gateway.state.auth.authenticate(conn)).is_admin


def get(gateway: GatewayServer, credential: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return httpx.get(gateway.url + UPSTREAMS, headers=headers)


def assert_admin_required(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json() == {"error": {
        "message": "This endpoint is for administrators. An operator grants access with "
                   "'gateway set-admin EMAIL'.",
        "type": "permission_error", "param": None, "code": "admin_required"}}


def test_set_admin_grants_and_revokes(gateway: GatewayServer, database_url: str,
                                      tmp_path: Path) -> None:
    acct = register(gateway.url)
    assert not is_admin_flag(gateway, acct)
    assert not principal_is_admin(gateway, acct.token)
    assert not principal_is_admin(gateway, acct.api_key)

    # Any spelling of the address finds the user, as at login.
    done = set_admin(database_url, tmp_path, acct.email.upper())
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{acct.email} admin=yes\n"
    assert is_admin_flag(gateway, acct)
    # The test gateway caches nothing (auth_cache_seconds=0): both credentials see it now.
    assert principal_is_admin(gateway, acct.token)
    assert principal_is_admin(gateway, acct.api_key)
    assert audits(gateway, acct) == [("user.admin_grant", acct.user_id, {"via": "cli"})]

    again = set_admin(database_url, tmp_path, acct.email)
    assert again.returncode == 0, again.stderr
    assert again.stdout == f"{acct.email} admin=yes (unchanged)\n"
    assert len(audits(gateway, acct)) == 1  # nothing changed, nothing recorded

    revoked = set_admin(database_url, tmp_path, acct.email, "--revoke")
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout == f"{acct.email} admin=no\n"
    assert not is_admin_flag(gateway, acct)
    assert not principal_is_admin(gateway, acct.token)
    assert not principal_is_admin(gateway, acct.api_key)
    assert audits(gateway, acct) == [("user.admin_grant", acct.user_id, {"via": "cli"}),
                                     ("user.admin_revoke", acct.user_id, {"via": "cli"})]
    assert_admin_required(get(gateway, acct.api_key))


def test_set_admin_unknown_email_fails_and_changes_nothing(gateway: GatewayServer,
                                                           database_url: str,
                                                           tmp_path: Path) -> None:
    before = rows(gateway, sa.select(sa.func.count()).select_from(User)
                  .where(User.is_admin.is_(True)))
    for flags in ((), ("--revoke",)):
        done = set_admin(database_url, tmp_path, "nobody-here@example.com", *flags)
        assert done.returncode == 2
        assert done.stderr == "gateway: no user with email nobody-here@example.com\n"
        assert done.stdout == ""
    assert rows(gateway, sa.select(sa.func.count()).select_from(User)
                .where(User.is_admin.is_(True))) == before


def test_admin_upstreams_refuses_anonymous_and_non_admins(gateway: GatewayServer,
                                                          account: Account) -> None:
    for credential in (None, "not-a-token", "gw-" + "x" * 40):
        r = get(gateway, credential)
        assert r.status_code == 401, r.text
        assert r.json()["error"]["type"] == "authentication_error"
    # A non-admin, with the session and with an API key alike (and an enterprise plan
    # does not make anyone an admin).
    for credential in (account.token, account.api_key):
        assert_admin_required(get(gateway, credential))
    r = httpx.post(gateway.url + UPSTREAMS, headers={"Authorization": f"Bearer {account.token}"})
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_admin_upstreams_shows_breakers_and_targets_to_admins(
        gateway: GatewayServer, database_url: str, tmp_path: Path) -> None:
    acct = register(gateway.url)
    assert set_admin(database_url, tmp_path, acct.email).returncode == 0
    for credential in (acct.token, acct.api_key):
        r = get(gateway, credential)
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        body = r.json()
        assert body["object"] == "list"
        upstreams = {u["name"]: u for u in body["upstreams"]}
        for name in ("fake-openai/gpt-4o-mini", "fake-anthropic/claude-haiku-4-5"):
            entry = upstreams[name]
            assert UPSTREAM_FIELDS <= set(entry), entry
            assert f"{entry['provider']}/{entry['upstream']}" == name
            assert entry["state"] == "closed"  # nothing has failed on this gateway
        models = {m["id"]: m for m in body["models"]}
        assert MODEL_FIELDS <= set(models["gpt-4o-mini"])
        assert [t["name"] for t in models["gpt-4o-mini"]["targets"]] == [
            "fake-openai/gpt-4o-mini"]
