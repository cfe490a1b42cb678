"""Spend budgets on a running gateway, per limiter backend: key and plan budgets, the 429,
/rate-limit, periods on an injected clock, a restart (and a Redis that lost its keys)
seeding the spend from the stored calls, and key validation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from gateway.settings import Settings
from storage.migrate import upgrade
from storage.models import InferenceRequest
from tests.conftest import (
    REDIS_URL,
    Account,
    make_settings,
    postgres_database,
    register,
    run_sync,
    set_plan,
    skip_or_fail,
)
from tests.legacy.support import query, wait_final
from tests.servers import GatewayServer, wait_for

HELLO = [{"role": "user", "content": "Hello"}]  # one prompt token for the demo model
# One prompt token at 15,000 USD per million costs 0.015 USD; the answer costs nothing.
PRICING = {"gateway-demo": {"input_per_million": 15000.0, "output_per_million": 0.0}}


class Clock:
    """The wall clock the gateway takes budget periods at; tests move it on."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def backend_settings(backend: str, tmp_path: Path) -> dict[str, Any]:
    if backend == "memory":
        url = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
        run_sync(upgrade, url)
        return {"database_url": url, "rate_limit_backend": "memory"}
    url = postgres_database("budgets")
    run_sync(upgrade, url)
    if backend == "sql":
        return {"database_url": url, "rate_limit_backend": "sql"}
    if not REDIS_URL:
        skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
    return {"database_url": url, "rate_limit_backend": "redis", "redis_url": REDIS_URL}


class Gateways:
    """Start (and restart) gateways on one database and limiter backend."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.tmp_path = tmp_path
        self.values = backend_settings(backend, tmp_path)
        self.clock = Clock()
        self.running: list[GatewayServer] = []

    def settings(self, **overrides: Any) -> Settings:
        values = {**self.values, "pricing": PRICING, **overrides}
        return make_settings(self.tmp_path, values.pop("database_url"), **values)

    def start(self, **overrides: Any) -> GatewayServer:
        server = GatewayServer(create_app(self.settings(**overrides),
                                          wall_clock=self.clock))
        self.running.append(server)
        return server

    def stop(self, server: GatewayServer) -> None:
        server.stop()
        self.running.remove(server)


@pytest.fixture(params=["memory", "sql", "redis"])
def gateways(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateways]:
    made = Gateways(request.param, tmp_path)
    try:
        yield made
    finally:
        for server in list(made.running):
            made.stop(server)


def enterprise(gw: GatewayServer) -> Account:
    """A user whose plan has no budget, so only the key's counts."""
    acct = register(gw.url)
    set_plan(gw, acct.user_id, "enterprise")
    return acct


def new_key(gw: GatewayServer, acct: Account, name: str = "ci", **limits: Any) -> httpx.Response:
    return httpx.post(gw.url + "/auth/keys", json={"name": name, "limits": limits},
                      headers={"Authorization": f"Bearer {acct.token}"})


def budget_key(gw: GatewayServer, acct: Account, **limits: Any) -> str:
    r = new_key(gw, acct, **limits)
    assert r.status_code == 201, r.text
    return r.json()["key"]


def chat(gw: GatewayServer, key: str, model: str = "gateway-demo") -> httpx.Response:
    return httpx.post(gw.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": HELLO}, timeout=20)


def budgets(gw: GatewayServer, key: str) -> list[dict[str, Any]]:
    r = httpx.get(gw.url + "/rate-limit", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.json()["budgets"]


def stored_costs(gw: GatewayServer, user_id: str) -> list[float]:
    calls = InferenceRequest.__table__
    rows = query(gw.state.settings.effective_database_url,
                 sa.select(calls.c.cost_usd).where(calls.c.user_id == uuid.UUID(user_id)))
    return sorted(row[0] for row in rows)


def month_end(now: datetime) -> datetime:
    first = datetime(now.year, now.month, 1, tzinfo=UTC)
    return (first + timedelta(days=32)).replace(day=1)


def test_key_budget_admits_while_below_then_refuses(gateways: Gateways) -> None:
    gw = gateways.start()
    acct = enterprise(gw)
    key = budget_key(gw, acct, budget_usd=0.04)
    assert [chat(gw, key).status_code for _ in range(3)] == [200, 200, 200]
    refused = chat(gw, key)
    assert refused.status_code == 429
    end = month_end(gateways.clock())
    reset = end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert refused.json() == {"error": {
        "message": f"Budget exceeded: API key 'ci' has spent $0.045 of its monthly budget "
                   f"of $0.04. It resets at {reset}.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}}
    wait = (end - datetime.now(UTC)).total_seconds()
    assert abs(int(refused.headers["retry-after"]) - wait) < 60
    assert budgets(gw, key) == [{"scope": "key", "name": "ci", "period": "month",
                                 "budget_usd": 0.04, "spent_usd": 0.045, "remaining_usd": 0.0,
                                 "resets_at": reset}]
    # Refused calls are not stored; the three admitted ones cost what was settled.
    assert wait_for(lambda: len(stored_costs(gw, acct.user_id)) == 3)
    assert stored_costs(gw, acct.user_id) == [0.015, 0.015, 0.015]
    # Another key of the same user has no budget of its own.
    assert chat(gw, acct.api_key).status_code == 200


def test_a_spent_budget_still_gets_its_free_cache_hits(gateways: Gateways) -> None:
    gw = gateways.start()
    key = budget_key(gw, enterprise(gw), budget_usd=0.02)
    auth = {"Authorization": f"Bearer {key}", "x-gateway-cache": "on"}

    def cached(text: str) -> httpx.Response:
        return httpx.post(gw.url + "/v1/chat/completions", headers=auth, timeout=20, json={
            "model": "gateway-demo", "messages": [{"role": "user", "content": text}]})

    # Two misses of 0.015 USD each spend the budget (0.03 of 0.02)...
    assert [(r.status_code, r.headers["x-gateway-cache"]) for r in (cached("Hello"),
            cached("Hi"))] == [(200, "miss"), (200, "miss")]
    # ...a new question is refused, but an answer already cached costs 0 and is served.
    assert cached("Hey").json()["error"]["code"] == "insufficient_quota"
    hit = cached("Hello")
    assert (hit.status_code, hit.headers["x-gateway-cache"]) == (200, "hit")
    assert budgets(gw, key)[0]["spent_usd"] == 0.03


def test_the_official_client_sees_insufficient_quota(gateways: Gateways) -> None:
    gw = gateways.start()
    key = budget_key(gw, enterprise(gw), budget_usd=0.01, budget_period="total")
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    # A stream is settled before its last bytes: the very next call sees its cost.
    stream = client.chat.completions.create(model="gateway-demo", messages=HELLO,  # type: ignore[arg-type]
                                            stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gateway-demo", messages=HELLO)  # type: ignore[arg-type]
    assert caught.value.code == "insufficient_quota"
    assert caught.value.type == "insufficient_quota"
    assert "total budget of $0.01" in caught.value.message
    assert "does not reset" in caught.value.message
    # A total budget never resets: no retry-after invites a retry.
    assert "retry-after" not in caught.value.response.headers
    assert budgets(gw, key)[0]["resets_at"] is None


def test_plan_budget_holds_the_whole_user(gateways: Gateways) -> None:
    gw = gateways.start(pricing={"gateway-demo": {"input_per_million": 600000.0,
                                                  "output_per_million": 0.0}})
    acct = register(gw.url)  # free plan: 1 USD a month for all of the user's keys
    other = budget_key(gw, acct, name="second")
    assert chat(gw, acct.api_key).status_code == 200  # 0.60 spent
    assert chat(gw, other).status_code == 200  # 1.20 spent: admitted while below
    # The session, the first key and the legacy, embeddings and messages APIs: all refused.
    refused = chat(gw, acct.api_key)
    assert refused.status_code == 429
    assert refused.json()["error"]["message"].startswith(
        "Budget exceeded: the free plan has spent $1.20 of its monthly budget of $1.00.")
    session = httpx.post(gw.url + "/v1/chat/completions",
                         headers={"Authorization": f"Bearer {acct.token}"},
                         json={"model": "gateway-demo", "messages": HELLO})
    assert session.json()["error"]["code"] == "insufficient_quota"
    messages = httpx.post(gw.url + "/v1/messages", headers={"x-api-key": other},
                          json={"model": "gateway-demo", "max_tokens": 10, "messages": HELLO})
    assert messages.status_code == 429
    assert messages.json()["type"] == "error"
    assert messages.json()["error"]["type"] == "rate_limit_error"
    assert "the free plan" in messages.json()["error"]["message"]
    embed = httpx.post(gw.url + "/v1/embeddings", headers={"x-api-key": other},
                       json={"model": "gateway-demo-embed", "input": "hi"})
    assert embed.status_code == 429 and embed.json()["error"]["code"] == "insufficient_quota"
    job = httpx.post(gw.url + "/inference", headers={"x-api-key": other},
                     json={"model": "gateway-demo", "prompt": "Hello"})
    assert job.status_code == 202
    view = wait_final(gw.url, other, job.json()["id"])
    assert view["status"] == "failed" and "the free plan" in view["error"]
    # The second key has no budget of its own: only the plan's applies.
    assert budgets(gw, other) == [
        {"scope": "plan", "name": "free", "period": "month", "budget_usd": 1.0,
         "spent_usd": 1.2, "remaining_usd": 0.0,
         "resets_at": month_end(gateways.clock()).strftime("%Y-%m-%dT%H:%M:%SZ")}]


def test_a_day_budget_resets_with_the_utc_day(gateways: Gateways) -> None:
    gw = gateways.start()
    key = budget_key(gw, enterprise(gw), budget_usd=0.02, budget_period="day")
    assert [chat(gw, key).status_code for _ in range(3)] == [200, 200, 429]
    tomorrow = (gateways.clock() + timedelta(days=1)).strftime("%Y-%m-%dT00:00:00Z")
    assert budgets(gw, key)[0]["resets_at"] == tomorrow
    gateways.clock.offset = timedelta(days=1)
    assert budgets(gw, key)[0]["spent_usd"] == 0.0
    assert [chat(gw, key).status_code for _ in range(3)] == [200, 200, 429]


def test_a_restart_keeps_what_was_spent(gateways: Gateways) -> None:
    gw = gateways.start()
    acct = enterprise(gw)
    made = new_key(gw, acct, budget_usd=0.04).json()
    key = made["key"]
    assert [chat(gw, key).status_code for _ in range(2)] == [200, 200]
    assert wait_for(lambda: len(stored_costs(gw, acct.user_id)) == 2)
    gateways.stop(gw)
    if gateways.backend == "redis":  # a Redis that lost its keys seeds them again
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        try:
            # This key's counters only: other tests share the server.
            assert client.delete(*client.keys(f"spend:{{key:{made['id']}}}:*")) == 1
        finally:
            client.close()
    gw = gateways.start()
    assert budgets(gw, key)[0]["spent_usd"] == 0.03
    assert [chat(gw, key).status_code for _ in range(2)] == [200, 429]


@pytest.mark.parametrize(("limits", "param", "fragment"), [
    ({"budget_usd": 0}, "limits.budget_usd", "positive number"),
    ({"budget_usd": -1.5}, "limits.budget_usd", "positive number"),
    ({"budget_usd": "5"}, "limits.budget_usd", "positive number"),
    ({"budget_usd": True}, "limits.budget_usd", "positive number"),
    ({"budget_usd": 1e300}, "limits.budget_usd", "at most"),
    ({"budget_usd": 5, "budget_period": "week"}, "limits.budget_period", "day, month, total"),
    ({"budget_usd": 5, "budget_period": 30}, "limits.budget_period", "day, month, total"),
    ({"budget_period": "day"}, "limits.budget_period", "needs limits.budget_usd"),
])
def test_key_budget_validation(gateway: GatewayServer, limits: dict, param: str,
                               fragment: str) -> None:
    acct = register(gateway.url)
    r = new_key(gateway, acct, **limits)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fragment in error["message"]
    keys = httpx.get(gateway.url + "/auth/keys", headers={"Authorization": f"Bearer {acct.token}"})
    assert [k["name"] for k in keys.json()["data"]] == ["default"]  # nothing stored


def test_key_listing_shows_the_budget(gateway: GatewayServer) -> None:
    acct = register(gateway.url)
    made = new_key(gateway, acct, budget_usd=5, tokens_per_minute=1000)
    assert made.status_code == 201
    assert made.json()["limits"] == {"tokens_per_minute": 1000, "budget_usd": 5.0,
                                     "budget_period": "month"}
    day = new_key(gateway, acct, name="daily", budget_usd=0.5, budget_period="day")
    keys = httpx.get(gateway.url + "/auth/keys",
                     headers={"Authorization": f"Bearer {acct.token}"}).json()["data"]
    assert {k["name"]: k["limits"] for k in keys} == {
        "default": {}, "ci": made.json()["limits"],
        "daily": {"budget_usd": 0.5, "budget_period": "day"}}
    assert day.json()["limits"] == {"budget_usd": 0.5, "budget_period": "day"}
