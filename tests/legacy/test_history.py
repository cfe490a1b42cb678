"""History and stats on the running gateway: filters, pagination, deletes, ownership, numbers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from storage.models import AuditLog, InferenceRequest
from tests.conftest import Account
from tests.legacy.support import auth, db, submit, wait_final
from tests.servers import FIXTURES, FakeUpstream, GatewayServer, Reply

PROMPTS = ["Weather in Paris?", "I am 100% sure", "snake_case or camelCase", "plain question"]


def v1_chat(gateway: GatewayServer, key: str, text: str) -> dict[str, Any]:
    r = httpx.post(gateway.url + "/v1/chat/completions", headers=auth(key),
                   json={"model": "gateway-demo",
                         "messages": [{"role": "user", "content": text}]})
    assert r.status_code == 200, r.text
    return r.json()


def history(gateway: GatewayServer, key: str, **params: Any) -> httpx.Response:
    return httpx.get(gateway.url + "/history", params=params, headers=auth(key))


def ids(gateway: GatewayServer, key: str, **params: Any) -> list[str]:
    r = history(gateway, key, **params)
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["data"]]


@pytest.fixture
def filled(gateway: GatewayServer, account: Account) -> dict[str, str]:
    """Four legacy jobs and two /v1 calls, oldest first; prompt → id."""
    made = {}
    for prompt in PROMPTS:
        job_id = submit(gateway.url, account.api_key, model="gateway-demo", prompt=prompt)
        wait_final(gateway.url, account.api_key, job_id)
        made[prompt] = job_id
    for text in ("v1 hello", "v1 goodbye"):
        v1_chat(gateway, account.api_key, text)
    gateway.flush()
    return made


def test_history_pages_newest_first_over_both_apis(gateway: GatewayServer, account: Account,
                                                   filled: dict[str, str]) -> None:
    key = account.api_key
    everything = ids(gateway, key, limit=100)
    assert len(everything) == 6
    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 4}
        if cursor:
            params["cursor"] = cursor
        body = history(gateway, key, **params).json()
        seen += [item["id"] for item in body["data"]]
        pages += 1
        cursor = body["next_cursor"]
        assert body["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert seen == everything and pages == 2
    items = history(gateway, key, limit=100).json()["data"]
    created = [item["created_at"] for item in items]
    assert created == sorted(created, reverse=True)
    assert [i["source"] for i in items[:2]] == ["v1", "v1"]
    assert everything[2:] == [filled[p] for p in reversed(PROMPTS)]
    first = items[-1]
    assert first["prompt_preview"] == "Weather in Paris?"
    assert first["response_preview"].startswith("Hello!") and first["status"] == "completed"
    assert first["usage"]["completion_tokens"] > 0


def test_history_filters(gateway: GatewayServer, account: Account,
                         filled: dict[str, str]) -> None:
    key = account.api_key
    assert len(ids(gateway, key, source="legacy")) == 4
    assert len(ids(gateway, key, source="v1")) == 2
    assert len(ids(gateway, key, model="gateway-demo")) == 6
    assert ids(gateway, key, model="gpt-4o") == []
    assert len(ids(gateway, key, status="completed")) == 6
    assert ids(gateway, key, status="failed,cancelled") == []
    # Text search: case-insensitive, and LIKE's wildcards are taken literally.
    assert ids(gateway, key, q="PARIS") == [filled["Weather in Paris?"]]
    assert ids(gateway, key, q="100%") == [filled["I am 100% sure"]]
    assert ids(gateway, key, q="%") == [filled["I am 100% sure"]]
    assert ids(gateway, key, q="e_c") == [filled["snake_case or camelCase"]]
    assert ids(gateway, key, q="r_i") == []  # "_" is not "any character"
    assert ids(gateway, key, q="goodbye", source="v1") != []
    today = datetime.now(UTC).date()
    assert len(ids(gateway, key, **{"from": today.isoformat()})) == 6
    assert len(ids(gateway, key, to=today.isoformat())) == 6
    assert ids(gateway, key, **{"from": (today + timedelta(days=1)).isoformat()}) == []
    assert ids(gateway, key, to=(today - timedelta(days=1)).isoformat()) == []
    for params, param in [({"status": "done"}, "status"), ({"source": "web"}, "source"),
                          ({"limit": 0}, "limit"), ({"limit": "many"}, "limit"),
                          ({"cursor": "garbage!"}, "cursor"), ({"from": "yesterday"}, "from"),
                          ({"from": "2026-02-01", "to": "2026-01-01"}, "from")]:
        r = history(gateway, key, **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["param"] == param


def test_history_item_and_delete(gateway: GatewayServer, account: Account,
                                 filled: dict[str, str]) -> None:
    key = account.api_key
    job_id = filled["Weather in Paris?"]
    r = httpx.get(f"{gateway.url}/history/{job_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    item = r.json()
    assert item["messages"] == [{"role": "user", "content": "Weather in Paris?"}]
    assert item["response"].startswith("Hello!") and item["source"] == "legacy"
    r = httpx.delete(f"{gateway.url}/history/{job_id}", headers=auth(key))
    assert r.status_code == 200 and r.json() == {"id": job_id, "object": "inference",
                                                 "deleted": True}
    assert httpx.get(f"{gateway.url}/history/{job_id}", headers=auth(key)).status_code == 404
    assert httpx.get(f"{gateway.url}/inference/{job_id}", headers=auth(key)).status_code == 404
    assert job_id not in ids(gateway, key, limit=100)
    gateway.flush()
    audits = db(gateway, sa.select(AuditLog.action, AuditLog.resource_id)
                .where(AuditLog.user_id == uuid.UUID(account.user_id)))
    assert ("history.delete", job_id) in [tuple(a) for a in audits]


def test_history_shows_the_serving_target_and_upstream_attempts(gateway: GatewayServer,
                                                                account: Account) -> None:
    """A call that fell back records who served it and each attempt; an older row (or one
    that never reached an upstream) shows null for both."""
    user_id = uuid.UUID(account.user_id)
    now = datetime.now(UTC)
    attempts = [{"target": "fault/down", "status": 503, "error": "upstream_unavailable"},
                {"target": "fault/down", "status": 503, "error": "upstream_unavailable"},
                {"target": "fault/ok", "status": 200}]
    served = InferenceRequest(user_id=user_id, model="primary", provider="fault",
                              upstream_model="ok", status="completed", response="fine",
                              messages=[{"role": "user", "content": "fall back"}],
                              served_by="fault/ok", upstream_attempts=attempts,
                              created_at=now, completed_at=now)
    plain = InferenceRequest(user_id=user_id, model="gateway-demo", provider="demo",
                             status="completed", messages=[{"role": "user", "content": "x"}],
                             created_at=now - timedelta(seconds=1), completed_at=now)

    async def insert() -> None:
        async with gateway.state.sessions() as session:
            session.add_all([served, plain])
            await session.commit()
    gateway.run(insert())

    listed = {item["id"]: item for item in history(gateway, account.api_key).json()["data"]}
    assert listed[str(served.id)]["served_by"] == "fault/ok"
    assert listed[str(plain.id)]["served_by"] is None
    assert "upstream_attempts" not in listed[str(served.id)]  # the list stays light
    for row, want_served, want_attempts in [(served, "fault/ok", attempts),
                                            (plain, None, None)]:
        r = httpx.get(f"{gateway.url}/history/{row.id}", headers=auth(account.token))
        assert r.status_code == 200, r.text
        item = r.json()
        assert (item["served_by"], item["upstream_attempts"]) == (want_served, want_attempts)


def test_other_users_requests_are_not_found(gateway: GatewayServer, account: Account,
                                            filled: dict[str, str]) -> None:
    from tests.conftest import register

    other = register(gateway.url)
    job_id = filled["plain question"]
    v1_id = history(gateway, account.api_key, source="v1").json()["data"][0]["id"]
    with httpx.Client(base_url=gateway.url, headers=auth(other.api_key)) as client:
        for target in (job_id, v1_id, str(uuid.uuid4()), "not-a-uuid"):
            for method, path in [("GET", f"/inference/{target}"),
                                 ("GET", f"/inference/{target}/result"),
                                 ("POST", f"/inference/{target}/cancel"),
                                 ("DELETE", f"/inference/{target}"),
                                 ("GET", f"/history/{target}"),
                                 ("DELETE", f"/history/{target}")]:
                r = client.request(method, path)
                assert r.status_code == 404, (method, path, r.text)
                assert r.json()["error"]["code"] == "not_found"
        r = client.get(f"/history/{job_id}", headers=auth(other.token))  # the JWT too
        assert r.status_code == 404
    assert history(gateway, other.api_key).json()["data"] == []
    assert httpx.get(f"{gateway.url}/history/{job_id}",
                     headers=auth(account.api_key)).status_code == 200
    for path in ("/history", f"/history/{job_id}", f"/inference/{job_id}", "/stats"):
        assert httpx.get(gateway.url + path).status_code == 401


def test_stats_match_the_calls_made(gateway: GatewayServer, upstream: FakeUpstream,
                                    account: Account) -> None:
    key = account.api_key
    done = [submit(gateway.url, key, model="gateway-demo", prompt=f"count me {i}")
            for i in range(2)]
    upstream.script(Reply.json(400, (FIXTURES / "openai_error_400.json").read_bytes()))
    failed = submit(gateway.url, key, model="gpt-4o-mini", prompt="this fails")
    for job_id in [*done, failed]:
        wait_final(gateway.url, key, job_id)
    upstream.script(Reply.recording("openai_text.json"))
    r = httpx.post(gateway.url + "/v1/chat/completions", headers=auth(key),
                   json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    gateway.flush()
    items = history(gateway, key, limit=100).json()["data"]
    assert len(items) == 4

    r = httpx.get(gateway.url + "/stats", headers=auth(key))
    assert r.status_code == 200, r.text
    stats = r.json()
    totals = stats["totals"]
    assert (totals["requests"], totals["succeeded"], totals["failed"]) == (4, 3, 1)
    assert totals["success_rate"] == 0.75
    assert totals["prompt_tokens"] == sum(i["usage"]["prompt_tokens"] for i in items)
    assert totals["completion_tokens"] == sum(i["usage"]["completion_tokens"] for i in items)
    assert totals["total_tokens"] == totals["prompt_tokens"] + totals["completion_tokens"]
    assert totals["avg_response_time_ms"] == round(
        sum(i["processing_time_ms"] for i in items) / 4)
    ttfts = [i["time_to_first_token_ms"] for i in items if i["time_to_first_token_ms"] is not None]
    assert totals["avg_time_to_first_token_ms"] == round(sum(ttfts) / len(ttfts))
    by_model = {m["model"]: m for m in stats["by_model"]}
    assert by_model["gateway-demo"]["requests"] == 2
    assert (by_model["gpt-4o-mini"]["requests"], by_model["gpt-4o-mini"]["failed"]) == (2, 1)
    assert len(stats["by_day"]) == 30 and stats["by_day"][-1]["requests"] == 4
    assert stats["to"] == datetime.now(UTC).date().isoformat()

    alias = httpx.get(gateway.url + "/usage", params={"days": 7}, headers=auth(key)).json()
    assert len(alias["by_day"]) == 7 and alias["totals"] == totals
    for params, param in [({"days": 0}, "days"), ({"from": "2026-02-01", "to": "2026-01-01"},
                                                  "from"), ({"to": "soon"}, "to")]:
        r = httpx.get(gateway.url + "/stats", params=params, headers=auth(key))
        assert r.status_code == 400 and r.json()["error"]["param"] == param
