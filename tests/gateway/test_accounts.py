"""Accounts end to end on the running gateway, on SQLite and on PostgreSQL."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import sqlalchemy as sa
from jose import jwt

from storage.models import ApiKey, AuditLog, User
from tests.conftest import SECRET, Account, register
from tests.servers import GatewayServer


def count(gateway: GatewayServer, stmt: sa.Select) -> int:
    async def run() -> int:
        async with gateway.state.engine.connect() as conn:
            return (await conn.execute(stmt)).scalar_one()
    return gateway.run(run())


def users_with_email(gateway: GatewayServer, email: str) -> int:
    return count(gateway, sa.select(sa.func.count()).select_from(User).where(User.email == email))


def me(gateway: GatewayServer, **headers: str) -> httpx.Response:
    return httpx.get(gateway.url + "/auth/me", headers=headers)


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, r.text
    err = r.json()["error"]
    assert err["type"] == "authentication_error"
    assert set(err) == {"message", "type", "param", "code"}


def test_register_login_and_use_jwt_and_key(gateway: GatewayServer) -> None:
    acct = register(gateway.url)
    assert acct.api_key.startswith("gw-")
    r = httpx.post(gateway.url + "/auth/login",
                   json={"email": acct.email.upper(), "password": acct.password})
    assert r.status_code == 200, r.text
    login = r.json()
    assert login["token_type"] == "bearer" and login["user"]["email"] == acct.email
    for headers in ({"Authorization": f"Bearer {login['token']}"},
                    {"Authorization": f"Bearer {acct.api_key}"},
                    {"X-API-Key": acct.api_key}):
        r = me(gateway, **headers)
        assert r.status_code == 200, r.text
        assert r.json()["email"] == acct.email
        assert r.json()["plan"]["name"] == "free"
    # Only the keyed hash is stored, never the key.
    gateway.flush()
    stored = count(gateway, sa.select(sa.func.count()).select_from(ApiKey)
                   .where(ApiKey.user_id == uuid.UUID(acct.user_id),
                          ApiKey.key_hash == gateway.state.hasher.hash(acct.api_key)))
    assert stored == 1
    actions = gateway.run(_audit_actions(gateway, acct.user_id))
    assert {"user.register", "api_key.create", "auth.login"} <= set(actions)


async def _audit_actions(gateway: GatewayServer, user_id: str) -> list[str]:
    await gateway.state.writer.flush()
    async with gateway.state.engine.connect() as conn:
        rows = await conn.execute(sa.select(AuditLog.action, AuditLog.ip, AuditLog.request_id)
                                  .where(AuditLog.user_id == uuid.UUID(user_id)))
        out = []
        for action, ip, request_id in rows:
            assert ip == "127.0.0.1" and request_id
            out.append(action)
        return out


def test_wrong_password_is_401_and_audited(gateway: GatewayServer, account: Account) -> None:
    r = httpx.post(gateway.url + "/auth/login",
                   json={"email": account.email, "password": "wrong password 1"})
    assert_401(r)
    r = httpx.post(gateway.url + "/auth/login",
                   json={"email": "nobody@example.com", "password": "wrong password 1"})
    assert_401(r)
    assert "auth.login_failed" in gateway.run(_audit_actions(gateway, account.user_id))


@pytest.mark.parametrize("header", [
    {},
    {"Authorization": "Bearer"},
    {"Authorization": "Basic dXNlcjpwYXNz"},
    {"Authorization": "Bearer gw-" + "A" * 43},
    {"X-API-Key": "not-a-key"},
])
def test_missing_or_malformed_credentials(gateway: GatewayServer, header: dict) -> None:
    assert_401(me(gateway, **header))


def test_tampered_expired_and_alg_none_jwts(gateway: GatewayServer, account: Account) -> None:
    head, payload, sig = account.token.split(".")
    tampered = f"{head}.{payload}.{sig[:-2]}{'A' if sig[-2] != 'A' else 'B'}{sig[-1]}"
    assert_401(me(gateway, Authorization=f"Bearer {tampered}"))
    now = int(time.time())
    claims = {"sub": account.user_id, "iss": "llm-gateway", "aud": "llm-gateway",
              "iat": now - 7200, "exp": now - 3600}
    expired = jwt.encode(claims, SECRET, algorithm="HS256")
    assert_401(me(gateway, Authorization=f"Bearer {expired}"))
    # alg "none": a header and payload with an empty signature.
    import base64
    import json

    def b64(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    none_token = b64({"alg": "none", "typ": "JWT"}) + "." + b64({**claims, "exp": now + 3600}) + "."
    assert_401(me(gateway, Authorization=f"Bearer {none_token}"))
    wrong_aud = jwt.encode({**claims, "exp": now + 3600, "aud": "other"}, SECRET, "HS256")
    assert_401(me(gateway, Authorization=f"Bearer {wrong_aud}"))
    wrong_key = jwt.encode({**claims, "exp": now + 3600}, "another-secret" * 4, "HS256")
    assert_401(me(gateway, Authorization=f"Bearer {wrong_key}"))


def test_duplicate_email_is_409(gateway: GatewayServer, account: Account) -> None:
    r = httpx.post(gateway.url + "/auth/register",
                   json={"email": account.email.upper(), "password": "another pass 99"})
    assert r.status_code == 409, r.text
    assert r.json()["error"]["param"] == "email"
    assert users_with_email(gateway, account.email) == 1


@pytest.mark.parametrize(("body", "param"), [
    ({"email": "not-an-email", "password": "good password 1"}, "email"),
    ({"email": "a@", "password": "good password 1"}, "email"),
    ({"password": "good password 1"}, "email"),
    ({"email": "weak@example.com", "password": "short1"}, "password"),
    ({"email": "weak@example.com", "password": "onlyletterslong"}, "password"),
    ({"email": "weak@example.com", "password": "x" * 80}, "password"),
    ({"email": "weak@example.com"}, "password"),
])
def test_bad_registration_names_field_and_stores_nothing(
        gateway: GatewayServer, body: dict, param: str) -> None:
    before = count(gateway, sa.select(sa.func.count()).select_from(User))
    r = httpx.post(gateway.url + "/auth/register", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert count(gateway, sa.select(sa.func.count()).select_from(User)) == before


def test_invalid_json_body(gateway: GatewayServer) -> None:
    r = httpx.post(gateway.url + "/auth/register", content=b"{nope",
                   headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"


def test_key_lifecycle(gateway: GatewayServer, account: Account) -> None:
    auth = {"Authorization": f"Bearer {account.token}"}
    r = httpx.post(gateway.url + "/auth/keys", json={"name": "ci"}, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()
    new_key = created["key"]
    assert created["masked"] == f"{new_key[:7]}…{new_key[-4:]}"
    listed = httpx.get(gateway.url + "/auth/keys", headers=auth).json()["data"]
    assert {k["name"] for k in listed} == {"default", "ci"}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert me(gateway, Authorization=f"Bearer {new_key}").status_code == 200

    r = httpx.post(f"{gateway.url}/auth/keys/{created['id']}/regenerate", headers=auth)
    assert r.status_code == 200
    regenerated = r.json()["key"]
    assert regenerated != new_key
    assert_401(me(gateway, Authorization=f"Bearer {new_key}"))
    assert me(gateway, Authorization=f"Bearer {regenerated}").status_code == 200

    r = httpx.delete(f"{gateway.url}/auth/keys/{created['id']}", headers=auth)
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert_401(me(gateway, Authorization=f"Bearer {regenerated}"))
    assert_401(me(gateway, **{"X-API-Key": regenerated}))
    actions = gateway.run(_audit_actions(gateway, account.user_id))
    assert {"api_key.regenerate", "api_key.revoke"} <= set(actions)


def test_revocation_is_immediate_even_with_cache(gateway: GatewayServer,
                                                 account: Account) -> None:
    auth = gateway.state.auth
    old_ttl, auth._ttl = auth._ttl, 60.0
    try:
        assert me(gateway, **{"X-API-Key": account.api_key}).status_code == 200
        keys = httpx.get(gateway.url + "/auth/keys",
                         headers={"Authorization": f"Bearer {account.token}"}).json()["data"]
        httpx.delete(f"{gateway.url}/auth/keys/{keys[0]['id']}",
                     headers={"Authorization": f"Bearer {account.token}"})
        assert_401(me(gateway, **{"X-API-Key": account.api_key}))
    finally:
        auth._ttl = old_ttl


def test_other_users_keys_are_404(gateway: GatewayServer, account: Account) -> None:
    other = register(gateway.url)
    keys = httpx.get(gateway.url + "/auth/keys",
                     headers={"Authorization": f"Bearer {other.token}"}).json()["data"]
    r = httpx.delete(f"{gateway.url}/auth/keys/{keys[0]['id']}",
                     headers={"Authorization": f"Bearer {account.token}"})
    assert r.status_code == 404
    assert me(gateway, **{"X-API-Key": other.api_key}).status_code == 200


def test_concurrent_misses_share_one_key_lookup(gateway: GatewayServer,
                                                account: Account) -> None:
    import asyncio

    from starlette.requests import HTTPConnection

    auth = gateway.state.auth
    lookups: list[str] = []
    original = auth._accounts.key_by_hash

    async def counted(key_hash: str):
        lookups.append(key_hash)
        await asyncio.sleep(0.05)  # a slow database: every caller arrives meanwhile
        return await original(key_hash)

    scope = {"type": "http", "headers": [(b"authorization",
                                          f"Bearer {account.api_key}".encode())]}

    async def burst() -> set:
        auth._keys.pop(account.api_key, None)  # the entry just expired
        auth._accounts.key_by_hash = counted
        try:
            found = await asyncio.gather(*(auth.authenticate(HTTPConnection(scope))
                                           for _ in range(50)))
        finally:
            auth._accounts.key_by_hash = original
        return {p.user_id for p in found}

    assert gateway.run(burst()) == {uuid.UUID(account.user_id)}
    assert len(lookups) == 1 and not auth._loading


def assert_utc(value: str | None, where: str) -> None:
    """An RFC 3339 timestamp in UTC, as the OpenAPI document's date-time promises."""
    assert value is not None, where
    assert value.endswith(("+00:00", "Z")), (where, value)


def test_timestamps_carry_their_timezone(gateway: GatewayServer, account: Account) -> None:
    """Found by schemathesis: SQLite hands timestamps back naive, and keys and users were
    answered without an offset ("2026-11-30T15:52:19.938745"), which no client can place."""
    session = {"authorization": f"Bearer {account.token}"}
    assert httpx.get(gateway.url + "/auth/me", headers={"x-api-key": account.api_key}
                     ).status_code == 200  # the key is used: last_used_at is set
    gateway.flush()
    login = httpx.post(gateway.url + "/auth/login",
                       json={"email": account.email, "password": account.password})
    assert login.status_code == 200, login.text
    assert_utc(login.json()["user"]["created_at"], "login user.created_at")
    listed = httpx.get(gateway.url + "/auth/keys", headers=session).json()["data"]
    assert_utc(listed[0]["created_at"], "keys[0].created_at")
    assert_utc(listed[0]["last_used_at"], "keys[0].last_used_at")
    key_id = listed[0]["id"]
    regenerated = httpx.post(gateway.url + f"/auth/keys/{key_id}/regenerate", headers=session)
    assert regenerated.status_code == 200, regenerated.text
    assert_utc(regenerated.json()["created_at"], "regenerated created_at")
    revoked = httpx.delete(gateway.url + f"/auth/keys/{key_id}", headers=session)
    assert revoked.status_code == 200, revoked.text
    assert_utc(revoked.json()["created_at"], "revoked created_at")
    assert_utc(revoked.json()["revoked_at"], "revoked_at")
