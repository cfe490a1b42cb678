"""Retries end to end: which upstream failures are retried, how often, how long the gateway
waits (retry-after), and that nothing is retried once the caller has a byte."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import Account
from tests.resilience.support import (
    MESSAGES,
    TEXT,
    FakeClock,
    attempt_statuses,
    chat,
    down,
    latest_row,
    ok_for,
    ok_json,
    ok_stream,
    provider,
    recording_events,
    resilient_gateway,
    sdk,
    sse_payloads,
    streamed_text,
)
from tests.servers import FakeUpstream, GatewayServer, Reply

RETRYABLE = [408, 409, 429, 500, 502, 503, 504, 529]
# (upstream status, recorded body): answers the caller must change its request for.
NOT_RETRYABLE = [(400, "openai_error_400.json"), (401, "openai_error_401.json"),
                 (403, "openai_error_401.json"), (404, "openai_error_404.json"),
                 (422, "openai_error_400.json")]


@pytest.fixture(scope="module")
def gateway(database_url: str, fault: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    # Breakers out of the way (1000 failures): these tests count retries alone.
    providers = {"fault": provider(fault, max_retries=2, breaker_failures=1000),
                 "slow": provider(fault, max_retries=1, read_timeout=0.3,
                                  breaker_failures=1000)}
    models = {name: {"provider": "fault", "upstream": name}
              for name in ("flaky", "strict", "limited", "dropping")}
    models["sluggish"] = {"provider": "slow", "upstream": "sluggish"}
    with resilient_gateway(tmp_path_factory.mktemp("retries"), database_url,
                           providers=providers, models=models, clock=FakeClock()) as server:
        yield server


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_two_503s_then_success(gateway: GatewayServer, fault: FakeUpstream, account: Account,
                               stream: bool) -> None:
    fault.script()
    fault.script_model("flaky", down(503), down(503), ok_for(stream))
    raw = sdk(gateway, account.api_key).chat.completions.with_raw_response.create(
        model="flaky", messages=MESSAGES, stream=stream)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-gateway-attempts"] == "3"
    assert raw.headers["x-gateway-served-by"] == "fault/flaky"
    if stream:
        chunks = list(raw.parse())
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert {c.model for c in chunks} == {"flaky"}
    else:
        out = raw.parse()
        text = out.choices[0].message.content
        assert out.model == "flaky"
    assert text == TEXT
    assert fault.hits("flaky") == 3 and fault.hits() == 3
    row = latest_row(gateway, account)
    assert row["status"] == "completed" and row["response"] == TEXT
    assert row["served_by"] == "fault/flaky" and row["attempts"] == 3
    assert attempt_statuses(row) == [("fault/flaky", "flaky", 503, True),
                                     ("fault/flaky", "flaky", 503, True),
                                     ("fault/flaky", "flaky", 200, False)]
    assert row["listed"]["served_by"] == "fault/flaky" and row["listed"]["attempts"] == 3


@pytest.mark.parametrize("status", RETRYABLE)
def test_each_retryable_status_is_retried(gateway: GatewayServer, fault: FakeUpstream,
                                          account: Account, status: int) -> None:
    name = "openai_error_429.json" if status == 429 else "openai_error_500.json"
    fault.script()
    fault.script_model("flaky", Reply.error(status, name), ok_json())
    r = chat(gateway, account.api_key, "flaky")
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == TEXT
    assert r.headers["x-gateway-attempts"] == "2" and fault.hits("flaky") == 2


@pytest.mark.parametrize(("status", "body"), NOT_RETRYABLE, ids=[s for s, _ in NOT_RETRYABLE])
def test_client_errors_are_not_retried(gateway: GatewayServer, fault: FakeUpstream,
                                       account: Account, status: int, body: str) -> None:
    fault.script()
    fault.script_model("strict", Reply.error(status, body), ok_json())
    r = chat(gateway, account.api_key, "strict")
    assert r.status_code >= 400 and "error" in r.json()
    if status == 400:  # the caller's own mistake reaches the caller as it is
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
        assert r.json()["error"]["param"] == "temperature"
    assert r.headers["x-gateway-attempts"] == "1" and fault.hits("strict") == 1
    # The call got past the limiter: its answer says where the caller stands, as 200s do.
    assert r.headers["x-ratelimit-limit-requests"].isdigit()
    assert r.headers["x-ratelimit-remaining-tokens"].isdigit()
    row = latest_row(gateway, account)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert attempt_statuses(row) == [("fault/strict", "strict", status, True)]


def test_a_timeout_before_the_first_byte_is_retried(gateway: GatewayServer,
                                                    fault: FakeUpstream,
                                                    account: Account) -> None:
    # The first answer says nothing for 3 s; the provider's read timeout is 0.3 s.
    fault.script()
    fault.script_model("sluggish", ok_stream(delay=3.0), ok_stream())
    r = chat(gateway, account.api_key, "sluggish", stream=True)
    assert r.status_code == 200
    payloads = sse_payloads(r.content)
    assert streamed_text(payloads) == TEXT and payloads[-1] == "[DONE]"
    assert not any("error" in p for p in payloads if isinstance(p, dict))
    assert r.headers["x-gateway-attempts"] == "2" and fault.hits("sluggish") == 2
    row = latest_row(gateway, account)
    assert [(t, failed) for t, _, _, failed in attempt_statuses(row)] == [
        ("slow/sluggish", True), ("slow/sluggish", False)]


def test_retry_after_ms_is_waited_for(gateway: GatewayServer, fault: FakeUpstream,
                                      account: Account) -> None:
    # Backoff alone would wait about a millisecond here: 0.3 s can only be the header.
    fault.script()
    fault.script_model("limited", Reply.error(429, "openai_error_429.json",
                                              retry_after_ms="300"), ok_json())
    started = time.monotonic()
    r = chat(gateway, account.api_key, "limited")
    elapsed = time.monotonic() - started
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    assert fault.hits("limited") == 2
    assert elapsed >= 0.3, elapsed


def test_retry_after_past_the_cap_is_not_waited_for(gateway: GatewayServer,
                                                    fault: FakeUpstream,
                                                    account: Account) -> None:
    # 30 s is past retry_backoff_max_seconds (8): the caller hears it at once instead.
    fault.script()
    fault.script_model("limited", Reply.error(429, "openai_error_429.json", retry_after="30"),
                       ok_json())
    started = time.monotonic()
    r = chat(gateway, account.api_key, "limited")
    elapsed = time.monotonic() - started
    assert r.status_code == 429, r.text
    assert r.headers["retry-after"] == "30"
    assert r.headers["x-gateway-attempts"] == "1" and fault.hits("limited") == 1
    assert elapsed < 5, elapsed


def test_no_retry_after_the_first_byte(gateway: GatewayServer, fault: FakeUpstream,
                                       account: Account) -> None:
    # Two events reach the caller, then the upstream connection drops.
    fault.script()
    fault.script_model("dropping", ok_stream(drop_after=2), ok_stream())
    r = chat(gateway, account.api_key, "dropping", stream=True)
    assert r.status_code == 200
    assert r.headers["x-gateway-attempts"] == "1"
    assert r.headers["x-gateway-served-by"] == "fault/dropping"
    payloads = sse_payloads(r.content)
    sent = sse_payloads(b"".join(recording_events("openai_text.sse")[:2]))
    assert streamed_text(payloads) == streamed_text(sent) == "Bon"
    errors = [p for p in payloads if isinstance(p, dict) and "error" in p]
    assert len(errors) == 1 and payloads[-2] == errors[0] and payloads[-1] == "[DONE]"
    assert set(errors[0]["error"]) >= {"message", "type", "code"}
    assert payloads.count("[DONE]") == 1
    assert fault.hits("dropping") == 1 and fault.dropped == 1
    row = latest_row(gateway, account)
    assert row["status"] == "failed" and row["response"] == "Bon"
    assert row["attempts"] == 1
    assert [t for t, _, _, _ in attempt_statuses(row)] == ["fault/dropping"]
