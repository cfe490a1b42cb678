"""GET /inference: the caller's jobs, newest first, paged with ``after``, filtered by
``status``, each exactly as GET /inference/{id} shows it."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.conftest import Account, register
from tests.legacy.support import auth, kept_alive, status, submit, wait_final, wait_until
from tests.servers import FakeUpstream, GatewayServer


def jobs(gateway: GatewayServer, key: str, **params: Any) -> httpx.Response:
    return httpx.get(gateway.url + "/inference", params=params, headers=auth(key))


def test_lists_own_jobs_newest_first_in_pages(gateway: GatewayServer, account: Account) -> None:
    key = account.api_key
    ids = [submit(gateway.url, key, model="gateway-demo", prompt=f"job {i}") for i in range(3)]
    for job_id in ids:
        wait_final(gateway.url, key, job_id)
    # Neither a /v1 call nor another user's job is listed.
    r = httpx.post(gateway.url + "/v1/chat/completions", headers=auth(key),
                   json={"model": "gateway-demo", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 200
    other = register(gateway.url)
    wait_final(gateway.url, other.api_key,
               submit(gateway.url, other.api_key, model="gateway-demo", prompt="not yours"))

    first = jobs(gateway, key, limit=2)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["object"] == "list" and body["has_more"] is True
    assert [j["id"] for j in body["data"]] == [ids[2], ids[1]]
    assert body["first_id"] == ids[2] and body["last_id"] == ids[1]
    # Each entry is the job's status view, word for word.
    assert body["data"] == [status(gateway.url, key, ids[2]), status(gateway.url, key, ids[1])]
    assert body["data"][0]["prompt_preview"] == "job 2"

    rest = jobs(gateway, key, limit=2, after=body["last_id"]).json()
    assert [j["id"] for j in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert jobs(gateway, key).json()["data"] == body["data"] + rest["data"]  # default 20
    # The session token sees the same list.
    assert [j["id"] for j in jobs(gateway, account.token).json()["data"]] == ids[::-1]


def test_status_filter_shows_a_running_job_with_progress(
        gateway: GatewayServer, upstream: FakeUpstream) -> None:
    acct = register(gateway.url)
    key = acct.api_key
    done = submit(gateway.url, key, model="gateway-demo", prompt="quick")
    wait_final(gateway.url, key, done)
    upstream.script(kept_alive())
    running = submit(gateway.url, key, model="gpt-4o-mini", prompt="slow")
    try:
        wait_until(gateway.url, key, running,
                   lambda v: (v["progress"] or {}).get("completion_tokens", 0) > 0)
        active = jobs(gateway, key, status="pending,processing").json()["data"]
        assert [j["id"] for j in active] == [running]
        assert active[0]["status"] == "processing"
        assert active[0]["progress"]["completion_tokens"] > 0
        assert [j["id"] for j in jobs(gateway, key, status="completed").json()["data"]] == [done]
    finally:
        httpx.post(f"{gateway.url}/inference/{running}/cancel", headers=auth(key))
    assert wait_final(gateway.url, key, running)["status"] == "cancelled"
    assert [j["id"] for j in jobs(gateway, key, status="cancelled").json()["data"]] == [running]


def test_bad_parameters_name_the_field(gateway: GatewayServer, account: Account) -> None:
    key = account.api_key
    other = register(gateway.url)
    theirs = submit(gateway.url, other.api_key, model="gateway-demo", prompt="theirs")
    cases = [({"status": "done"}, "status"), ({"status": "pending,nope"}, "status"),
             ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "1_0"}, "limit"),
             ({"after": "not-an-id"}, "after"), ({"after": str(uuid.uuid4())}, "after"),
             ({"after": theirs}, "after")]  # another user's id is as unknown as a random one
    for params, param in cases:
        r = jobs(gateway, key, **params)
        assert r.status_code == 400, (params, r.text)
        error = r.json()["error"]
        assert error["param"] == param and error["type"] == "invalid_request_error", error
    assert httpx.get(gateway.url + "/inference").status_code == 401
