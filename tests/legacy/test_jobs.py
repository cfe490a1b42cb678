"""The job API on the running gateway: submit → poll → result, validation, cancel, retries."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
import sqlalchemy as sa

from providers.demo import compose_reply
from storage.models import InferenceRequest
from tests.conftest import Account, register
from tests.legacy.support import (
    auth,
    db,
    kept_alive,
    rows_of,
    status,
    submit,
    wait_final,
    wait_until,
)
from tests.servers import (
    FIXTURES,
    FakeUpstream,
    GatewayServer,
    Reply,
    recorded_openai,
    wait_for,
)


def test_demo_job_end_to_end(gateway: GatewayServer, account: Account) -> None:
    job_id = submit(gateway.url, account.api_key, model="gateway-demo",
                    prompt="What is a gateway?", parameters={"temperature": 0.3})
    view = wait_final(gateway.url, account.api_key, job_id)
    assert view["status"] == "completed" and view["attempts"] == 1
    assert view["model"] == "gateway-demo" and view["source"] == "legacy"
    assert view["started_at"] and view["processing_time_ms"] is not None
    assert view["progress"] is None and view["error"] is None
    r = httpx.get(f"{gateway.url}/inference/{job_id}/result", headers=auth(account.api_key))
    assert r.status_code == 200, r.text
    result = r.json()
    expected = compose_reply([{"role": "user", "content": "What is a gateway?"}])
    assert result["response"] == expected
    assert result["finish_reason"] == "stop"
    assert result["usage"]["completion_tokens"] == len(expected.split())
    assert result["usage"]["prompt_tokens"] == 4
    # The JWT reaches the same job as the API key.
    assert status(gateway.url, account.token, job_id)["status"] == "completed"
    row = db(gateway, sa.select(InferenceRequest).where(InferenceRequest.id == uuid.UUID(job_id)))
    assert row[0].parameters == {"temperature": 0.3}
    assert row[0].messages == [{"role": "user", "content": "What is a gateway?"}]


def test_job_through_a_provider_faked_at_the_http_boundary(
        gateway: GatewayServer, upstream: FakeUpstream, account: Account) -> None:
    upstream.script(Reply.by_event("openai_text.sse"))
    job_id = submit(gateway.url, account.api_key, model="gpt-4o-mini",
                    messages=[{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Say hello in French"}],
                    parameters={"temperature": 0.5, "maxTokens": 50, "top_p": 0.9,
                                "stop": "END"})
    view = wait_final(gateway.url, account.api_key, job_id)
    assert view["status"] == "completed", view
    result = httpx.get(f"{gateway.url}/inference/{job_id}/result",
                       headers=auth(account.api_key)).json()
    assert result["response"] == recorded_openai("openai_text.sse")[0]
    assert result["usage"] == {"prompt_tokens": 2061, "completion_tokens": 22,
                               "total_tokens": 2083, "estimated": False}
    sent = orjson.loads(upstream.received[-1].body)
    assert upstream.received[-1].path == "/v1/chat/completions"
    assert sent["model"] == "gpt-4o-mini" and sent["stream"] is True
    assert sent["messages"][1] == {"role": "user", "content": "Say hello in French"}
    assert sent["temperature"] == 0.5 and sent["top_p"] == 0.9 and sent["stop"] == ["END"]
    assert sent.get("max_tokens", sent.get("max_completion_tokens")) == 50


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "no-such-model", "prompt": "hi"}, "model"),
    ({"model": "gateway-demo", "prompt": ""}, "prompt"),
    ({"model": "gateway-demo", "prompt": "   "}, "prompt"),
    ({"model": "gateway-demo"}, "prompt"),
    ({"model": "gateway-demo", "prompt": "hi", "parameters": {"temperature": 2.5}},
     "parameters.temperature"),
    ({"model": "gateway-demo", "prompt": "hi", "parameters": {"maxTokens": 0}},
     "parameters.maxTokens"),
    ({"model": "gateway-demo", "prompt": "hi", "parameters": {"top_p": "high"}},
     "parameters.top_p"),
    ({"model": "gateway-demo", "prompt": "hi", "parameters": {"frequency": 1}},
     "parameters.frequency"),
    ({"model": "gateway-demo", "prompt": "hi", "parameters": [1]}, "parameters"),
    ({"model": "gateway-demo", "prompt": "hi", "messages": []}, "prompt"),
    ({"model": "gateway-demo", "messages": [{"role": "robot", "content": "x"}]},
     "messages[0].role"),
    ({"model": "gateway-demo", "prompt": "hi", "stream": True}, "stream"),
    ({"prompt": "hi"}, "model"),
])
def test_bad_submissions_name_the_field_and_store_nothing(
        gateway: GatewayServer, account: Account, body: dict, param: str) -> None:
    r = httpx.post(gateway.url + "/inference", json=body, headers=auth(account.api_key))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}
    if param.startswith("parameters."):
        assert f"'{param}'" in error["message"]
    assert rows_of(gateway, account.user_id) == 0


def test_model_outside_the_plan_is_a_400_on_model(gateway: GatewayServer) -> None:
    acct = register(gateway.url)  # free plan: no gpt-4o
    r = httpx.post(gateway.url + "/inference", json={"model": "gpt-4o", "prompt": "hi"},
                   headers=auth(acct.api_key))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "model"
    assert r.json()["error"]["code"] == "model_not_found"
    r = httpx.post(gateway.url + "/inference", json={"model": "gateway-demo", "prompt": "hi"})
    assert r.status_code == 401
    assert rows_of(gateway, acct.user_id) == 0


def put_back(gateway: GatewayServer, job_id: str) -> bool:
    """A worker claimed the job and put it back to pending (the limiter held it back)."""
    row = db(gateway, sa.select(InferenceRequest.status, InferenceRequest.created_at,
                                InferenceRequest.updated_at)
             .where(InferenceRequest.id == uuid.UUID(job_id)))[0]
    return row.status == "pending" and row.updated_at > row.created_at


def test_cancel_running_and_pending_jobs(gateway: GatewayServer, upstream: FakeUpstream) -> None:
    acct = register(gateway.url)  # free plan: two concurrent calls, so the third waits
    # The calls stay open until cancelled. An upstream that went silent instead hit the
    # gateway's 2 s read timeout when the machine was slow: the attempt failed, the job went
    # back to pending for a retry, and the cancel found it there, with no tokens.
    upstream.script(kept_alive())
    key = acct.api_key
    running = [submit(gateway.url, key, model="gpt-4o-mini", prompt=f"slow {i}")
               for i in range(2)]
    for job_id in running:
        view = wait_until(gateway.url, key, job_id,
                          lambda v: (v["progress"] or {}).get("completion_tokens", 0) > 0)
        assert view["status"] == "processing"
    waiting = submit(gateway.url, key, model="gpt-4o-mini", prompt="waits for a slot")
    assert wait_for(lambda: put_back(gateway, waiting), 10)
    assert status(gateway.url, key, waiting)["attempts"] == 0  # waiting is not an attempt
    assert len(upstream.received) == 2
    r = httpx.get(f"{gateway.url}/inference/{running[0]}/result", headers=auth(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_not_finished"

    r = httpx.post(f"{gateway.url}/inference/{waiting}/cancel", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = httpx.post(f"{gateway.url}/inference/{running[0]}/cancel", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = httpx.delete(f"{gateway.url}/inference/{running[1]}", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"

    assert wait_for(lambda: upstream.disconnects >= 2, 5), "upstream calls were not stopped"
    for job_id in running:
        view = wait_final(gateway.url, key, job_id, timeout=5)
        assert view["status"] == "cancelled" and view["attempts"] == 1
        assert view["usage"]["completion_tokens"] > 0  # what was produced is recorded
        detail = httpx.get(f"{gateway.url}/history/{job_id}", headers=auth(key)).json()
        assert detail["response"].startswith("Bon")
        r = httpx.get(f"{gateway.url}/inference/{job_id}/result", headers=auth(key))
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_cancelled"
    view = wait_final(gateway.url, key, waiting, timeout=5)
    assert view["status"] == "cancelled" and view["attempts"] == 0
    # Cancelling twice is harmless; a finished job cannot be cancelled.
    r = httpx.post(f"{gateway.url}/inference/{waiting}/cancel", headers=auth(key))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    upstream.script(Reply.by_event("openai_text.sse"))
    done = submit(gateway.url, key, model="gpt-4o-mini", prompt="quick")
    wait_final(gateway.url, key, done)
    r = httpx.delete(f"{gateway.url}/inference/{done}", headers=auth(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "job_finished"


def test_jobs_wait_for_a_concurrency_slot(gateway: GatewayServer, upstream: FakeUpstream) -> None:
    acct = register(gateway.url)  # free plan: two concurrent calls
    upstream.script(Reply.by_event("openai_text.sse", delay=0.02))  # about half a second a call
    started = time.monotonic()
    ids = [submit(gateway.url, acct.api_key, model="gpt-4o-mini", prompt=f"job {i}")
           for i in range(4)]
    views = [wait_final(gateway.url, acct.api_key, job_id, timeout=15) for job_id in ids]
    elapsed = time.monotonic() - started
    assert [v["status"] for v in views] == ["completed"] * 4
    assert [v["attempts"] for v in views] == [1] * 4  # waiting is not an attempt
    single = max(v["processing_time_ms"] for v in views) / 1000
    assert elapsed >= 1.8 * single  # never more than two at a time


def test_transient_upstream_error_is_retried(gateway: GatewayServer, upstream: FakeUpstream,
                                             account: Account) -> None:
    body = (FIXTURES / "openai_error_500.json").read_bytes()
    upstream.script(Reply.json(503, body, {"retry-after-ms": "100"}),
                    Reply.by_event("openai_text.sse"))
    job_id = submit(gateway.url, account.api_key, model="gpt-4o-mini", prompt="retry me")
    view = wait_final(gateway.url, account.api_key, job_id)
    assert view["status"] == "completed" and view["attempts"] == 2
    assert view["error"] is None


def test_upstream_rejection_fails_the_job(gateway: GatewayServer, upstream: FakeUpstream,
                                          account: Account) -> None:
    body = (FIXTURES / "openai_error_400.json").read_bytes()
    upstream.script(Reply.json(400, body))
    job_id = submit(gateway.url, account.api_key, model="gpt-4o-mini", prompt="bad")
    view = wait_final(gateway.url, account.api_key, job_id)
    assert view["status"] == "failed" and view["attempts"] == 1 and view["error"]
    r = httpx.get(f"{gateway.url}/inference/{job_id}/result", headers=auth(account.api_key))
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "job_failed"
    assert view["error"] in r.json()["error"]["message"]


def test_a_job_whose_processes_keep_dying_fails_after_max_attempts(
        gateway: GatewayServer, account: Account) -> None:
    job_id = uuid.uuid4()
    now = datetime.now(UTC)
    db(gateway, sa.insert(InferenceRequest.__table__).values(
        id=job_id, user_id=uuid.UUID(account.user_id), source="legacy", model="gateway-demo",
        provider="demo", messages=[{"role": "user", "content": "doomed"}], parameters={},
        prompt="user: doomed", status="processing", attempts=3, lease_owner="crashed:1:x",
        lease_expires_at=now - timedelta(seconds=1), created_at=now, started_at=now,
        updated_at=now))
    view = wait_final(gateway.url, account.api_key, str(job_id), timeout=5)
    assert view["status"] == "failed" and view["attempts"] == 3
    assert "Gave up after 3 attempts" in view["error"]


def test_submissions_count_against_the_plan(gateway: GatewayServer) -> None:
    acct = register(gateway.url)  # free plan: 20 requests a minute
    for i in range(20):
        submit(gateway.url, acct.api_key, model="gateway-demo", prompt=f"n{i}")
    r = httpx.post(gateway.url + "/inference", json={"model": "gateway-demo", "prompt": "one more"},
                   headers=auth(acct.api_key))
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert rows_of(gateway, acct.user_id) == 20
