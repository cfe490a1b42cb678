"""Request bodies nested too deep: refused once, where every JSON body is parsed, with a 400
naming the field, before anything is stored or sent upstream."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gateway.http import too_deep
from storage.models import InferenceRequest, User
from tests.conftest import Account
from tests.servers import FakeUpstream, GatewayServer, Reply


def nested(levels: int) -> Any:
    """``levels`` lists inside one another: ``[[[...]]]``."""
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def deep_messages(levels: int = 300) -> list[dict[str, Any]]:
    return [{"role": "user", "content": [{"type": "text", "text": "hi", "z": nested(levels)}]}]


def count_rows(gateway: GatewayServer, user_id: str) -> int:
    async def run() -> int:
        await gateway.state.writer.flush()
        async with gateway.state.engine.connect() as conn:
            result = await conn.execute(
                sa.select(sa.func.count()).select_from(InferenceRequest)
                .where(InferenceRequest.user_id == uuid.UUID(user_id)))
            return int(result.scalar_one())
    return gateway.run(run())


def assert_too_deep(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (
        param, "too_deep", "invalid_request_error")
    assert "64 levels" in error["message"]


@pytest.mark.parametrize("model", ["gateway-demo", "gpt-4o-mini"])
@pytest.mark.parametrize("stream", [False, True])
def test_v1_refuses_a_deep_field_and_stores_nothing(
        gateway: GatewayServer, account: Account, upstream: FakeUpstream, model: str,
        stream: bool) -> None:
    upstream.script(Reply.recording("openai_text.sse" if stream else "openai_text.json"))
    r = httpx.post(gateway.url + "/v1/chat/completions",
                   headers={"Authorization": f"Bearer {account.api_key}"},
                   json={"model": model, "messages": deep_messages(), "stream": stream})
    assert_too_deep(r, "messages[0].content[0].z")
    assert upstream.received == []
    assert count_rows(gateway, account.user_id) == 0


def test_inference_refuses_a_deep_content_part(gateway: GatewayServer,
                                                account: Account) -> None:
    r = httpx.post(gateway.url + "/inference",
                   headers={"Authorization": f"Bearer {account.api_key}"},
                   json={"model": "gateway-demo", "messages": deep_messages()})
    assert_too_deep(r, "messages[0].content[0].z")
    assert count_rows(gateway, account.user_id) == 0


def test_register_refuses_a_deep_field(gateway: GatewayServer) -> None:
    email = f"deep-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(gateway.url + "/auth/register",
                   json={"email": email, "password": "correct horse 42",
                         "profile": {"a": nested(100)}})
    assert_too_deep(r, "profile.a")

    async def users() -> int:
        async with gateway.state.engine.connect() as conn:
            result = await conn.execute(sa.select(sa.func.count()).select_from(User)
                                        .where(User.email == email))
            return int(result.scalar_one())
    assert gateway.run(users()) == 0


def test_beyond_orjsons_own_limit_is_a_400_too(gateway: GatewayServer,
                                               account: Account) -> None:
    body = b'{"model": "gateway-demo", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    r = httpx.post(gateway.url + "/v1/chat/completions", content=body,
                   headers={"Authorization": f"Bearer {account.api_key}",
                            "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    assert count_rows(gateway, account.user_id) == 0


def test_depth_boundary_and_paths() -> None:
    assert too_deep({"a": nested(63)}, 64) is None  # the body plus 63 levels: 64
    assert too_deep({"a": nested(64)}, 64) == "a"
    assert too_deep({"a": [1, {"b": {"c": {}}}]}, 3) == "a[1].b"
    assert too_deep({"a": [1, {"b": {"c": {}}}]}, 4) == "a[1].b.c"
    assert too_deep({"a": [1, {"b": {"c": {}}}]}, 5) is None
    assert too_deep({"x": "[[[[[[[[", "y": [{}] * 1000}, 3) is None  # wide, not deep
    # Iterative: orjson's deepest value costs no Python recursion.
    assert too_deep({"a": nested(1023)}, 64) == "a"
