"""Circuit breakers end to end, on a clock the test moves by hand: a target that keeps
failing is left alone (fail fast, or its fallback) until its cooldown is over, then one
probe decides whether it is back."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import Account
from tests.resilience.conftest import customer
from tests.resilience.support import (
    FakeClock,
    attempt_statuses,
    chat,
    down,
    latest_row,
    ok_json,
    provider,
    refused_url,
    resilient_gateway,
)
from tests.servers import FakeUpstream, GatewayServer, Reply, wait_for

FAILURES = 3
COOLDOWN = 30


@pytest.fixture
def gateway(sqlite_url: str, fault: FakeUpstream, clock: FakeClock,
            tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway of its own per test: breaker state lives in the process."""
    # max_retries=0: each call is one upstream attempt, so failures are simply counted.
    breaker = {"max_retries": 0, "breaker_failures": FAILURES,
               "breaker_cooldown_seconds": COOLDOWN}
    providers = {"fault": provider(fault, **breaker),
                 "gone": provider(refused_url(), **breaker)}
    models = {"solo": {"provider": "fault", "upstream": "down"},
              "guarded": {"provider": "fault", "upstream": "guarded", "fallbacks": ["backup"]},
              "backup": {"provider": "fault", "upstream": "ok"},
              "void": {"provider": "gone", "upstream": "nothing"}}
    fault.script()
    with resilient_gateway(tmp_path, sqlite_url, providers=providers, models=models,
                           clock=clock) as server:
        yield server


@pytest.fixture
def account(gateway: GatewayServer) -> Account:
    return customer(gateway)


def assert_fails_fast(r: httpx.Response, retry_after: str | None = None) -> None:
    """The breaker's own answer: 503 upstream_unavailable, no upstream call made."""
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "upstream_unavailable"
    assert r.headers["x-gateway-attempts"] == "0"
    assert "x-gateway-served-by" not in r.headers
    assert r.headers["retry-after"].isdigit()
    if retry_after is not None:
        assert r.headers["retry-after"] == retry_after


def open_breaker(gateway: GatewayServer, fault: FakeUpstream, key: str,
                 model: str = "solo", upstream: str = "down") -> None:
    fault.script_model(upstream, down(503))
    for i in range(FAILURES):
        r = chat(gateway, key, model)
        assert r.status_code >= 500 and r.headers["x-gateway-attempts"] == "1", r.text
        assert fault.hits(upstream) == i + 1


def test_the_breaker_opens_fails_fast_and_closes_after_a_good_probe(
        gateway: GatewayServer, fault: FakeUpstream, clock: FakeClock, account: Account) -> None:
    open_breaker(gateway, fault, account.api_key)
    assert_fails_fast(chat(gateway, account.api_key, "solo"), str(COOLDOWN))
    assert_fails_fast(chat(gateway, account.api_key, "solo", stream=True), str(COOLDOWN))
    clock.advance(10.5)
    assert_fails_fast(chat(gateway, account.api_key, "solo"), "20")  # 19.5 s, rounded up
    assert fault.hits("down") == FAILURES
    clock.advance(COOLDOWN)  # past the cooldown: half-open
    fault.script_model("down", ok_json())
    probe = chat(gateway, account.api_key, "solo")
    assert probe.status_code == 200, probe.text
    assert probe.headers["x-gateway-served-by"] == "fault/down"
    assert fault.hits("down") == FAILURES + 1
    for i in range(3):  # closed again: every call reaches the upstream
        assert chat(gateway, account.api_key, "solo").status_code == 200
        assert fault.hits("down") == FAILURES + 2 + i


def test_only_one_probe_goes_through_while_half_open(
        gateway: GatewayServer, fault: FakeUpstream, clock: FakeClock, account: Account) -> None:
    open_breaker(gateway, fault, account.api_key)
    clock.advance(COOLDOWN + 1)
    gate = threading.Event()
    # The probe's upstream answers its status line, then holds the body until the gate.
    fault.script_model("down", Reply.recording("openai_text.json", hang_after=0, gate=gate),
                       ok_json())
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(chat, gateway, account.api_key, "solo")
        try:
            assert wait_for(lambda: fault.hits("down") == FAILURES + 1), "no probe"
            assert_fails_fast(chat(gateway, account.api_key, "solo"))
            assert_fails_fast(chat(gateway, account.api_key, "solo", stream=True))
            assert fault.hits("down") == FAILURES + 1
        finally:
            gate.set()
        assert probe.result(20).status_code == 200
    r = chat(gateway, account.api_key, "solo")
    assert r.status_code == 200 and fault.hits("down") == FAILURES + 2


def test_a_failed_probe_opens_the_breaker_again(
        gateway: GatewayServer, fault: FakeUpstream, clock: FakeClock, account: Account) -> None:
    open_breaker(gateway, fault, account.api_key)
    clock.advance(COOLDOWN + 1)
    probe = chat(gateway, account.api_key, "solo")  # the upstream is still down
    assert probe.status_code >= 500 and probe.headers["x-gateway-attempts"] == "1"
    assert fault.hits("down") == FAILURES + 1
    # A whole new cooldown from the failed probe on.
    assert_fails_fast(chat(gateway, account.api_key, "solo"), str(COOLDOWN))
    assert fault.hits("down") == FAILURES + 1
    clock.advance(COOLDOWN + 1)
    fault.script_model("down", ok_json())
    assert chat(gateway, account.api_key, "solo").status_code == 200
    assert fault.hits("down") == FAILURES + 2


def test_an_open_breaker_sends_calls_straight_to_the_fallback(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script_model("ok", ok_json())
    fault.script_model("guarded", down(503))
    for _ in range(FAILURES):
        r = chat(gateway, account.api_key, "guarded")
        assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    r = chat(gateway, account.api_key, "guarded")
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-served-by"] == "fault/ok"
    assert r.headers["x-gateway-attempts"] == "1"  # the open target is not called
    assert fault.hits("guarded") == FAILURES and fault.hits("ok") == FAILURES + 1
    row = latest_row(gateway, account)
    assert row["served_by"] == "fault/ok" and row["attempts"] == 1
    assert attempt_statuses(row)[-1] == ("fault/ok", "backup", 200, False)


def test_client_errors_do_not_open_the_breaker(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script_model("down", Reply.error(400, "openai_error_400.json"))
    for i in range(FAILURES + 2):
        assert chat(gateway, account.api_key, "solo").status_code == 400
        assert fault.hits("down") == i + 1


def test_refused_connections_open_the_breaker(gateway: GatewayServer, account: Account) -> None:
    for _ in range(FAILURES):
        r = chat(gateway, account.api_key, "void")
        assert r.status_code >= 500 and r.headers["x-gateway-attempts"] == "1"
    assert_fails_fast(chat(gateway, account.api_key, "void"), str(COOLDOWN))


def test_a_failed_fast_call_is_stored_and_the_admin_view_shows_the_open_breaker(
        gateway: GatewayServer, fault: FakeUpstream, clock: FakeClock, account: Account) -> None:
    open_breaker(gateway, fault, account.api_key)
    assert_fails_fast(chat(gateway, account.api_key, "solo"), str(COOLDOWN))
    row = latest_row(gateway, account)
    assert (row["status"], row["attempts"], row["served_by"], row["upstream_attempts"]) == (
        "failed", 0, None, [])
    assert "circuit breaker open" in row["error"]
    assert (row["listed"]["status"], row["listed"]["attempts"]) == ("failed", 0)

    admin = customer(gateway)
    gateway.run(gateway.state.accounts.set_admin(uuid.UUID(admin.user_id), True, via="test"))
    r = httpx.get(gateway.url + "/admin/upstreams",
                  headers={"Authorization": f"Bearer {admin.api_key}"})
    assert r.status_code == 200, r.text
    upstreams = {u["name"]: u for u in r.json()["upstreams"]}
    down_target = upstreams["fault/down"]
    assert (down_target["state"], down_target["consecutive_failures"], down_target["opens"],
            down_target["failures_to_open"], down_target["in_flight"]) == (
        "open", FAILURES, 1, FAILURES, 0)
    assert down_target["retry_in_seconds"] == COOLDOWN
    assert upstreams["fault/ok"]["state"] == "closed"
    models = {m["id"]: m for m in r.json()["models"]}
    assert models["guarded"]["fallbacks"] == ["backup"]
    assert models["guarded"]["targets"] == [{"name": "fault/guarded", "weight": 1.0}]
    clock.advance(COOLDOWN + 1)
    r = httpx.get(gateway.url + "/admin/upstreams",
                  headers={"Authorization": f"Bearer {admin.api_key}"})
    assert {u["name"]: u for u in r.json()["upstreams"]}["fault/down"]["state"] == "half_open"
