"""Key management needs a signed-in session; a revoked key stays revoked (SQLite, PostgreSQL)."""

from __future__ import annotations

import uuid

import httpx
import pytest
import sqlalchemy as sa

from storage.models import ApiKey
from tests.conftest import Account
from tests.servers import GatewayServer


def key_rows(gateway: GatewayServer, user_id: str) -> dict[str, tuple[str, str]]:
    """id -> (status, key_hash) of every key row of the user, read from the database."""
    async def run() -> dict[str, tuple[str, str]]:
        async with gateway.state.engine.connect() as conn:
            rows = await conn.execute(sa.select(ApiKey.id, ApiKey.status, ApiKey.key_hash)
                                      .where(ApiKey.user_id == uuid.UUID(user_id)))
            return {str(i): (status, key_hash) for i, status, key_hash in rows}
    return gateway.run(run())


def session(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


def assert_permission_denied(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    assert r.json() == {"error": {
        "message": r.json()["error"]["message"], "type": "permission_error", "param": None,
        "code": "permission_denied"}}


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_a_limited_api_key_cannot_mint_an_unlimited_key(gateway: GatewayServer,
                                                        account: Account, header: str) -> None:
    r = httpx.post(gateway.url + "/auth/keys", headers=session(account),
                   json={"name": "tight", "limits": {"requests_per_minute": 1}})
    assert r.status_code == 201, r.text
    tight = r.json()["key"]
    value = f"Bearer {tight}" if header == "Authorization" else tight
    before = key_rows(gateway, account.user_id)

    assert_permission_denied(httpx.post(gateway.url + "/auth/keys", headers={header: value},
                                        json={"name": "escape"}))
    assert key_rows(gateway, account.user_id) == before  # nothing minted


def test_every_key_management_call_refuses_an_api_key(gateway: GatewayServer,
                                                      account: Account) -> None:
    key_id = next(iter(key_rows(gateway, account.user_id)))
    by_key = {"Authorization": f"Bearer {account.api_key}"}
    before = key_rows(gateway, account.user_id)
    assert_permission_denied(httpx.get(gateway.url + "/auth/keys", headers=by_key))
    assert_permission_denied(httpx.post(f"{gateway.url}/auth/keys/{key_id}/regenerate",
                                        headers=by_key))
    assert_permission_denied(httpx.delete(f"{gateway.url}/auth/keys/{key_id}", headers=by_key))
    assert key_rows(gateway, account.user_id) == before  # not regenerated, not revoked
    # The key itself still works where keys belong, and the session still manages keys.
    assert httpx.get(gateway.url + "/auth/me", headers=by_key).status_code == 200
    assert httpx.get(gateway.url + "/auth/keys", headers=session(account)).status_code == 200


def test_a_revoked_key_cannot_be_regenerated_back_to_life(gateway: GatewayServer,
                                                          account: Account) -> None:
    key_id = next(iter(key_rows(gateway, account.user_id)))
    r = httpx.delete(f"{gateway.url}/auth/keys/{key_id}", headers=session(account))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    revoked = key_rows(gateway, account.user_id)[key_id]

    r = httpx.post(f"{gateway.url}/auth/keys/{key_id}/regenerate", headers=session(account))
    assert r.status_code == 409, r.text
    error = r.json()["error"]
    assert error["code"] == "api_key_revoked" and error["type"] == "invalid_request_error"
    assert "key" not in r.json()
    assert key_rows(gateway, account.user_id)[key_id] == revoked  # same hash, still revoked
    # Revoking again is harmless and changes nothing.
    r = httpx.delete(f"{gateway.url}/auth/keys/{key_id}", headers=session(account))
    assert r.status_code == 200 and r.json()["status"] == "revoked"
    assert key_rows(gateway, account.user_id)[key_id] == revoked
