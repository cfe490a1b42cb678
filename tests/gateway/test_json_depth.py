"""Request bodies nested too deep: refused once, where every JSON body is parsed, with a 400
naming the field, before anything is stored or sent upstream."""

from __future__ import annotations

import timeit
import uuid
from typing import Any

import httpx
import orjson
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


def chat_body(messages: int, words: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [
        {"role": "user" if i % 2 else "assistant", "content": "word " * words}
        for i in range(messages)]}


def ordinary_bodies() -> dict[str, dict[str, Any]]:
    """1-10 KB bodies: short and long conversations, and one with tools (many small
    objects: the most values to visit per byte)."""
    tools = [{"type": "function", "function": {
        "name": f"tool_{i}", "description": "d" * 40, "parameters": {
            "type": "object", "properties": {"city": {"type": "string"},
                                             "unit": {"enum": ["c", "f"]}}}}}
             for i in range(8)]
    return {"1 KB, 4 messages": chat_body(4, 45), "7 KB, 30 messages": chat_body(30, 40),
            "10 KB, 2 messages": chat_body(2, 1000),
            "8.6 KB, 30 messages and 8 tools": {**chat_body(30, 40), "tools": tools}}


def cost(fn: Any) -> float:
    """Microseconds per call: the best of many short runs, so a busy machine's pauses
    (other processes) fall between runs rather than into the figure."""
    return min(timeit.repeat(fn, number=100, repeat=100)) / 100 * 1e6


def test_the_check_costs_about_one_more_parse_at_most() -> None:
    """The walk visits each value once; it must stay near orjson's own parse of the same
    body (a walk that builds paths as it goes, or recurses, costs 4-5 times more)."""
    for name, body in ordinary_bodies().items():
        raw = orjson.dumps(body)
        assert 1_000 <= len(raw) <= 10_500, name
        parse, check = cost(lambda raw=raw: orjson.loads(raw)), cost(
            lambda body=body: too_deep(body, 64))
        assert check < 2.5 * parse, (name, parse, check)


# The figures, printed: python -m tests.gateway.test_json_depth
if __name__ == "__main__":
    for name, body in ordinary_bodies().items():
        raw = orjson.dumps(body)
        parse, check = cost(lambda raw=raw: orjson.loads(raw)), cost(
            lambda body=body: too_deep(body, 64))
        print(f"{name:32} {len(raw):6} B  parse {parse:5.1f} µs  depth check {check:5.1f} µs")
