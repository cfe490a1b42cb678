"""Retries against the caller's plan (one slot, one request, whatever the attempts), and
legacy ``/inference`` jobs routed like ``/v1`` calls: through a fallback."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Account, register, set_plan
from tests.legacy.support import auth, submit, wait_final
from tests.resilience.support import (
    MESSAGES,
    TEXT,
    FakeClock,
    attempt_statuses,
    down,
    latest_row,
    ok_for,
    ok_stream,
    provider,
    resilient_gateway,
    sdk,
)
from tests.servers import FakeUpstream, GatewayServer


@pytest.fixture(scope="module")
def gateway(database_url: str, fault: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    providers = {"fault": provider(fault, max_retries=2, breaker_failures=1000)}
    models = {"flaky": {"provider": "fault", "upstream": "flaky"},
              "primary": {"provider": "fault", "upstream": "down", "fallbacks": ["backup"]},
              "backup": {"provider": "fault", "upstream": "ok"}}
    with resilient_gateway(tmp_path_factory.mktemp("jobs"), database_url, providers=providers,
                           models=models, clock=FakeClock()) as server:
        yield server


def key_with_limits(gateway: GatewayServer, account: Account, **limits: int) -> str:
    r = httpx.post(gateway.url + "/auth/keys", headers=auth(account.token),
                   json={"name": "one-at-a-time", "limits": limits})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def rate_limit(gateway: GatewayServer, key: str) -> dict:
    r = httpx.get(gateway.url + "/rate-limit", headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_retries_take_one_slot_and_one_request(gateway: GatewayServer, fault: FakeUpstream,
                                                stream: bool) -> None:
    acct = register(gateway.url)
    set_plan(gateway, acct.user_id, "pro")  # every model, 300 requests a minute
    key = key_with_limits(gateway, acct, concurrent_requests=1)
    fault.script()
    fault.script_model("flaky", down(503), down(502), ok_for(stream))
    raw = sdk(gateway, key).chat.completions.with_raw_response.create(
        model="flaky", messages=MESSAGES, stream=stream)
    assert raw.http_response.status_code == 200
    if stream:
        assert "".join(c.choices[0].delta.content or ""
                       for c in raw.parse() if c.choices) == TEXT
    else:
        assert raw.parse().choices[0].message.content == TEXT
    assert raw.headers["x-gateway-attempts"] == "3" and fault.hits("flaky") == 3
    assert raw.headers["x-ratelimit-remaining-requests"] == str(300 - 1)
    status = rate_limit(gateway, key)
    assert status["limits"]["concurrent_requests"] == 1
    assert status["requests"]["used"] == 1  # three attempts, one request
    assert status["concurrent"]["in_use"] == 0


def test_a_legacy_job_is_served_by_the_fallback(gateway: GatewayServer, fault: FakeUpstream,
                                                account: Account) -> None:
    fault.script()
    fault.script_model("down", down(503))
    fault.script_model("ok", ok_stream())
    job_id = submit(gateway.url, account.api_key, model="primary", prompt="Say hello in French")
    view = wait_final(gateway.url, account.api_key, job_id)
    assert view["status"] == "completed", view
    result = httpx.get(f"{gateway.url}/inference/{job_id}/result", headers=auth(account.api_key))
    assert result.status_code == 200 and result.json()["response"] == TEXT
    assert fault.hits("down") == 3 and fault.hits("ok") == 1
    gateway.flush()
    item = httpx.get(f"{gateway.url}/history/{job_id}", headers=auth(account.token)).json()
    assert item["served_by"] == "fault/ok"
    assert attempt_statuses(item) == [("fault/down", "primary", 503, True)] * 3 + [
        ("fault/ok", "backup", 200, False)]
    assert latest_row(gateway, account)["id"] == job_id
