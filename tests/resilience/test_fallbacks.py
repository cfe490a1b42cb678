"""Fallbacks end to end: when a route's retries are spent its fallbacks answer, in order,
each with its own retries, only those the caller's plan allows, never a fallback's own
fallbacks; a context-length error goes to ``context_fallbacks``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from storage.models import SubscriptionPlan
from tests.conftest import Account, set_plan
from tests.resilience.conftest import customer
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
    provider,
    refused_url,
    resilient_gateway,
    sdk,
    sse_payloads,
    streamed_text,
)
from tests.servers import FakeUpstream, GatewayServer, Reply


def route(upstream: str, *, via: str = "fault", **kw: object) -> dict[str, object]:
    return {"provider": via, "upstream": upstream, **kw}


@pytest.fixture(scope="module")
def gateway(database_url: str, fault: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    providers = {"fault": provider(fault, max_retries=2, breaker_failures=1000),
                 "gone": provider(refused_url(), max_retries=1, breaker_failures=1000,
                                  connect_timeout=2.0)}
    models = {
        "primary": route("down", fallbacks=["backup"]),
        "backup": route("ok"),
        "lonely": route("down"),
        "ordered": route("down", fallbacks=["second", "backup"]),
        # A fallback's own fallbacks are not used: "ordered" never reaches "third".
        "second": route("second-down", fallbacks=["third"]),
        "third": route("third-ok"),
        "guarded": route("down", fallbacks=["hidden", "backup"]),
        "hidden": route("hidden-ok"),
        "unreachable": route("nowhere", via="gone", fallbacks=["backup"]),
        "ctx": route("small", context_fallbacks=["big"]),
        "ctx-plain": route("small"),
        "big": route("big"),
    }
    with resilient_gateway(tmp_path_factory.mktemp("fallbacks"), database_url,
                           providers=providers, models=models, clock=FakeClock()) as server:
        yield server


def plan_allowing(gateway: GatewayServer, models: list[str]) -> str:
    """A plan of its own whose model list is ``models`` (fnmatch patterns, as the seed's)."""
    name = f"narrow-{uuid.uuid4().hex[:8]}"

    async def create() -> None:
        async with gateway.state.sessions() as session:
            session.add(SubscriptionPlan(name=name, requests_per_minute=1000,
                                         concurrent_requests=10, tokens_per_minute=10_000_000,
                                         features={"models": models}))
            await session.commit()

    gateway.run(create())
    return name


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_the_fallback_answers_when_the_primary_stays_down(
        gateway: GatewayServer, fault: FakeUpstream, account: Account, stream: bool) -> None:
    fault.script()
    fault.script_model("down", down(503))
    fault.script_model("ok", ok_for(stream))
    raw = sdk(gateway, account.api_key).chat.completions.with_raw_response.create(
        model="primary", messages=MESSAGES, stream=stream)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-gateway-served-by"] == "fault/ok"
    assert raw.headers["x-gateway-attempts"] == "4"
    if stream:
        chunks = list(raw.parse())
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == TEXT
        assert {c.model for c in chunks} == {"backup"}
    else:
        out = raw.parse()
        assert out.choices[0].message.content == TEXT and out.model == "backup"
    assert fault.hits("down") == 3 and fault.hits("ok") == 1  # max_retries=2, then backup
    row = latest_row(gateway, account)
    assert row["status"] == "completed" and row["served_by"] == "fault/ok"
    assert row["attempts"] == 4
    assert attempt_statuses(row) == [("fault/down", "primary", 503, True)] * 3 + [
        ("fault/ok", "backup", 200, False)]


def test_without_a_fallback_the_caller_gets_the_failure(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script()
    fault.script_model("down", down(503))
    r = chat(gateway, account.api_key, "lonely")
    assert r.status_code >= 500 and "error" in r.json()
    assert r.headers["x-gateway-attempts"] == "3" and fault.hits("down") == 3
    assert "x-gateway-served-by" not in r.headers
    row = latest_row(gateway, account)
    assert row["status"] == "failed" and row["served_by"] is None and row["attempts"] == 3


def test_fallbacks_are_tried_in_order_and_not_recursively(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script()
    fault.script_model("down", down(503))
    fault.script_model("second-down", down(500))
    fault.script_model("ok", ok_json())
    fault.script_model("third-ok", ok_json())
    r = chat(gateway, account.api_key, "ordered")
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-served-by"] == "fault/ok" and r.json()["model"] == "backup"
    assert r.headers["x-gateway-attempts"] == "7"
    assert (fault.hits("down"), fault.hits("second-down"), fault.hits("ok")) == (3, 3, 1)
    assert fault.hits("third-ok") == 0
    row = latest_row(gateway, account)
    assert [(t, m) for t, m, _, _ in attempt_statuses(row)] == (
        [("fault/down", "ordered")] * 3 + [("fault/second-down", "second")] * 3
        + [("fault/ok", "backup")])


def test_only_fallbacks_the_plan_allows(gateway: GatewayServer, fault: FakeUpstream) -> None:
    fault.script()
    fault.script_model("down", down(503))
    fault.script_model("hidden-ok", ok_json())
    fault.script_model("ok", ok_json())
    acct = customer(gateway, plan_allowing(gateway, ["guarded", "backup"]))
    r = chat(gateway, acct.api_key, "guarded")
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-served-by"] == "fault/ok"
    assert fault.hits("hidden-ok") == 0 and fault.hits("ok") == 1
    # With no allowed fallback left, the primary's failure is the answer.
    fault.script()
    fault.script_model("down", down(503))
    fault.script_model("hidden-ok", ok_json())
    fault.script_model("ok", ok_json())
    set_plan(gateway, acct.user_id, plan_allowing(gateway, ["guarded"]))
    r = chat(gateway, acct.api_key, "guarded")
    assert r.status_code >= 500 and r.headers["x-gateway-attempts"] == "3"
    assert fault.hits("hidden-ok") == 0 and fault.hits("ok") == 0


def test_a_refused_connection_is_retried_then_falls_back(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script()
    fault.script_model("ok", ok_json())
    r = chat(gateway, account.api_key, "unreachable")
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-attempts"] == "3"  # gone: max_retries=1, so 2; then backup
    assert r.headers["x-gateway-served-by"] == "fault/ok"
    row = latest_row(gateway, account)
    assert attempt_statuses(row) == [("gone/nowhere", "unreachable", None, True)] * 2 + [
        ("fault/ok", "backup", 200, False)]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_context_length_error_goes_to_the_context_fallback(
        gateway: GatewayServer, fault: FakeUpstream, account: Account, stream: bool) -> None:
    fault.script()
    fault.script_model("small", Reply.error(400, "openai_error_context_length.json"))
    fault.script_model("big", ok_for(stream))
    r = chat(gateway, account.api_key, "ctx", stream=stream)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-served-by"] == "fault/big"
    assert r.headers["x-gateway-attempts"] == "2"
    if stream:
        payloads = sse_payloads(r.content)
        assert streamed_text(payloads) == TEXT
        assert {p["model"] for p in payloads if isinstance(p, dict)} == {"big"}
    else:
        assert r.json()["model"] == "big"
    assert fault.hits("small") == 1 and fault.hits("big") == 1  # a 400 is never retried
    row = latest_row(gateway, account)
    assert row["served_by"] == "fault/big"
    assert attempt_statuses(row) == [("fault/small", "ctx", 400, True),
                                     ("fault/big", "big", 200, False)]


def test_other_errors_do_not_go_to_the_context_fallback(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script()
    fault.script_model("small", Reply.error(400, "openai_error_400.json"))
    fault.script_model("big", ok_json())
    r = chat(gateway, account.api_key, "ctx")
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    assert fault.hits("small") == 1 and fault.hits("big") == 0


def test_without_context_fallbacks_the_caller_gets_the_400(
        gateway: GatewayServer, fault: FakeUpstream, account: Account) -> None:
    fault.script()
    fault.script_model("small", Reply.error(400, "openai_error_context_length.json"))
    fault.script_model("big", ok_json())
    r = chat(gateway, account.api_key, "ctx-plain")
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert "maximum context length" in error["message"]
    assert r.headers["x-gateway-attempts"] == "1"
    assert fault.hits("small") == 1 and fault.hits("big") == 0
