"""Load balancing end to end: a route with several deployments spreads calls by weight,
``least-busy`` goes where fewer calls are in flight, and a target whose breaker is open
gets none."""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Account
from tests.resilience.conftest import customer
from tests.resilience.support import (
    MESSAGES,
    TEXT,
    FakeClock,
    chat,
    down,
    ok_json,
    ok_stream,
    provider,
    resilient_gateway,
)
from tests.servers import FakeUpstream, GatewayServer

CALLS = 400  # 75/25 expected; 5 sigma of a binomial(400, 0.75) is 43 calls


@pytest.fixture(scope="module")
def other() -> Iterator[FakeUpstream]:
    """Provider ``b``'s upstream (``a`` is on ``fault``)."""
    server = FakeUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(sqlite_url: str, fault: FakeUpstream, other: FakeUpstream,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    # The clock never moves: a breaker that opens here stays open.
    breaker = {"max_retries": 0, "breaker_failures": 2, "breaker_cooldown_seconds": 30}
    providers = {"a": provider(fault, **breaker), "b": provider(other, **breaker)}
    models = {
        "balanced": {"strategy": "weighted", "targets": [
            {"provider": "a", "upstream": "x", "weight": 3},
            {"provider": "b", "upstream": "y", "weight": 1}]},
        # Weights that least-busy must not follow: 100:1 would almost never pick ``b``.
        "busy": {"strategy": "least-busy", "targets": [
            {"provider": "a", "upstream": "lx", "weight": 100},
            {"provider": "b", "upstream": "ly", "weight": 1}]},
        "shielded": {"strategy": "weighted", "targets": [
            {"provider": "a", "upstream": "sx", "weight": 3},
            {"provider": "b", "upstream": "sy", "weight": 1}]},
    }
    with resilient_gateway(tmp_path_factory.mktemp("balancing"), sqlite_url,
                           providers=providers, models=models, clock=FakeClock()) as server:
        yield server


@pytest.fixture
def account(gateway: GatewayServer) -> Account:
    return customer(gateway)


def test_weights_split_the_calls(gateway: GatewayServer, fault: FakeUpstream,
                                 other: FakeUpstream, account: Account) -> None:
    fault.script(ok_json())
    other.script(ok_json())
    served: Counter[str] = Counter()
    with httpx.Client(base_url=gateway.url, timeout=20,
                      headers={"Authorization": f"Bearer {account.api_key}"}) as client:
        for _ in range(CALLS):
            r = client.post("/v1/chat/completions",
                            json={"model": "balanced", "messages": MESSAGES})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "balanced"
            assert r.headers["x-gateway-attempts"] == "1"
            served[r.headers["x-gateway-served-by"]] += 1
    assert set(served) == {"a/x", "b/y"}
    assert (fault.hits("x"), other.hits("y")) == (served["a/x"], served["b/y"])
    assert fault.hits() + other.hits() == CALLS  # nothing went anywhere else
    sigma = math.sqrt(CALLS * 0.75 * 0.25)
    assert abs(served["a/x"] - 0.75 * CALLS) <= 5 * sigma, served


def test_least_busy_goes_where_fewer_calls_are_in_flight(
        gateway: GatewayServer, fault: FakeUpstream, other: FakeUpstream,
        account: Account) -> None:
    # Every answer sends its first two events and then holds: the calls stay in flight.
    fault.script(ok_stream(hang_after=2))
    other.script(ok_stream(hang_after=2))
    served, readers = [], []
    with contextlib.ExitStack() as held, httpx.Client(timeout=20) as client:
        for _ in range(4):
            r = held.enter_context(client.stream(
                "POST", gateway.url + "/v1/chat/completions",
                headers={"Authorization": f"Bearer {account.api_key}"},
                json={"model": "busy", "messages": MESSAGES, "stream": True}))
            assert r.status_code == 200
            chunks = r.iter_raw()
            next(chunks)  # the call is under way upstream
            # Kept: an iterator dropped here would close its stream, and end the call.
            readers.append(chunks)
            served.append(r.headers["x-gateway-served-by"])
        # Second and fourth calls: the other target had fewer in flight.
        assert {served[0], served[1]} == {"a/lx", "b/ly"}
        assert {served[2], served[3]} == {"a/lx", "b/ly"}
        assert (fault.hits("lx"), other.hits("ly")) == (2, 2)


def test_an_open_breaker_takes_a_target_out_of_the_rotation(
        gateway: GatewayServer, fault: FakeUpstream, other: FakeUpstream,
        account: Account) -> None:
    fault.script(down(503))
    other.script(ok_json())
    attempts = 0
    for _ in range(40):
        r = chat(gateway, account.api_key, "shielded")
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-served-by"] == "b/sy"
        assert r.json()["choices"][0]["message"]["content"] == TEXT
        attempts += int(r.headers["x-gateway-attempts"])
    # a/sx failed twice (breaker_failures=2), each time passed on to b/sy; then never again.
    assert fault.hits("sx") == 2 and other.hits("sy") == 40
    assert attempts == 42
