"""Schemathesis against the embedded gateway (uvicorn, SQLite, in-memory limiter, the offline
demo model without delay), driven by the document the gateway serves at /openapi.json.

Every answer must be no 5xx, a documented status, of a documented content type, with a
body that matches its schema and the headers the document says are always there.

Bound: MAX_EXAMPLES random cases per operation (positive and negative) in the fuzzing
phase, plus the deterministic cases of the coverage phase (each bound, type and enum of the
schema, and its violations; most of the run: ~390 of them for chat completions alone).
Measured: 26 operations, ~1,400 cases, 100 s with a load average of 9 on 2 cores (the
tests' own CPU time is 35 s).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from gateway.app import create_app
from gateway.openapi import document
from gateway.settings import DEMO_MODEL
from tests.conftest import Account, make_settings, register, set_plan
from tests.servers import GatewayServer, running, wait_for

MAX_EXAMPLES = 10
# The answers as documented, and a method a path does not take is a 405 with Allow
# (unsupported_method). Not ignored_auth: it takes the credential this test adds for
# schemathesis' own guess (and fails every operation); tests/gateway/test_openapi.py checks
# that each operation declaring security refuses a call without it.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, unsupported_method]


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    settings_ = make_settings(tmp_path_factory.mktemp("fuzz"), migrate_on_start=True,
                              # Failed logins are slowed down by sleeping (up to 4 s each);
                              # tests/gateway/test_auth_abuse.py covers that.
                              login_delay_max_seconds=0)
    with running(create_app(settings_)) as server:
        yield server


@pytest.fixture(scope="module")
def fuzz_account(fuzz_gateway: GatewayServer) -> Account:
    """An enterprise admin: the plan's limits leave room for the run, and /admin answers."""
    account = register(fuzz_gateway.url)
    set_plan(fuzz_gateway, account.user_id, "enterprise")
    fuzz_gateway.run(fuzz_gateway.state.accounts.set_admin(uuid.UUID(account.user_id), True,
                                                           via="test"))
    return account


# The document the gateway serves (tests/gateway/test_openapi.py checks they are the same
# bytes), loaded when the tests are collected: one test per operation. Loading it from the
# running server (``schemathesis.pytest.from_fixture``) fails on pytest 9 in schemathesis
# 4.32 (it sets ``request.node._nodeid``, which pytest 9 no longer has).
schema = schemathesis.openapi.from_dict(document())


def fresh_job(gateway: GatewayServer, account: Account) -> str:
    r = httpx.post(gateway.url + "/inference", json={"model": DEMO_MODEL, "prompt": "hi"},
                   headers={"authorization": f"Bearer {account.api_key}"})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def fresh_key(gateway: GatewayServer, account: Account) -> str:
    r = httpx.post(gateway.url + "/auth/keys", json={"name": "fuzz"},
                   headers={"authorization": f"Bearer {account.token}"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


def prepare(case: Any, gateway: GatewayServer, account: Account) -> dict[str, str]:
    """Point the case at real things, and return its credential header.

    A generated model name or id would only ever meet a 404: a string model becomes the
    demo model, and a well-formed id becomes a resource made for this case alone (so
    revoking a key or deleting a request leaves the next case its own). Malformed ids
    (negative cases) are kept, for the 404 path.
    """
    path = case.operation.path
    params = case.path_parameters or {}
    if isinstance(case.body, dict) and isinstance(case.body.get("model"), str):
        case.body["model"] = DEMO_MODEL
    if "key_id" in params and is_uuid(params["key_id"]):
        params["key_id"] = fresh_key(gateway, account)
    if "id" in params and is_uuid(params["id"]):
        params["id"] = fresh_job(gateway, account)
    if path.startswith("/auth/keys"):
        return {"authorization": f"Bearer {account.token}"}  # keys need the session
    return {"authorization": f"Bearer {account.api_key}"}


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                 HealthCheck.function_scoped_fixture])
def test_every_answer_matches_the_document(case: Any, fuzz_gateway: GatewayServer,
                                           fuzz_account: Account) -> None:
    credential = prepare(case, fuzz_gateway, fuzz_account)
    case.call_and_validate(base_url=fuzz_gateway.url, headers=credential, checks=CHECKS,
                           timeout=30)


def conforms(method: str, path: str, response: httpx.Response) -> None:
    """``response`` has a documented status, and a body that matches its schema."""
    assert str(response.status_code) in document()["paths"][path][method.lower()]["responses"]
    schema[path][method].validate_response(response)


def test_answers_random_cases_rarely_reach_match_the_document(
        fuzz_gateway: GatewayServer, fuzz_account: Account) -> None:
    """The successes random data seldom reaches: a login, a finished job's result, a plain
    and a streamed completion, a duplicate registration and a plan's 429."""
    url, key = fuzz_gateway.url, {"authorization": f"Bearer {fuzz_account.api_key}"}
    login = httpx.post(url + "/auth/login", json={"email": fuzz_account.email,
                                                  "password": fuzz_account.password})
    assert login.status_code == 200, login.text
    conforms("POST", "/auth/login", login)
    again = httpx.post(url + "/auth/register", json={"email": fuzz_account.email,
                                                     "password": "another long one 7"})
    assert again.status_code == 409, again.text
    conforms("POST", "/auth/register", again)

    job = fresh_job(fuzz_gateway, fuzz_account)
    assert wait_for(lambda: httpx.get(f"{url}/inference/{job}", headers=key).json()["status"]
                    == "completed", timeout=15)
    conforms("GET", "/inference/{id}/result",
             httpx.get(f"{url}/inference/{job}/result", headers=key))
    conforms("GET", "/history/{id}", httpx.get(f"{url}/history/{job}", headers=key))

    body = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    plain = httpx.post(url + "/v1/chat/completions", json=body, headers=key)
    assert plain.status_code == 200, plain.text
    conforms("POST", "/v1/chat/completions", plain)
    streamed = httpx.post(url + "/v1/chat/completions", json={**body, "stream": True},
                          headers=key)
    assert streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.endswith("data: [DONE]\n\n")

    # The plan's requests per minute are per user: a fresh user, so the one allowed is free.
    other = register(url)
    limited = httpx.post(url + "/auth/keys", json={"limits": {"requests_per_minute": 1}},
                         headers={"authorization": f"Bearer {other.token}"}).json()
    answers = [httpx.post(url + "/v1/chat/completions", json=body,
                          headers={"authorization": f"Bearer {limited['key']}"})
               for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 429], answers[-1].text
    conforms("POST", "/v1/chat/completions", answers[1])
    assert answers[1].headers["retry-after"].isdigit()
