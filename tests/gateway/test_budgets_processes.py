"""Budgets are exact across two real gateway processes sharing Redis or PostgreSQL: calls
alternating between them see each other's spend, and concurrent calls at the edge are
all settled (the overshoot is bounded by the calls admitted at once, never by a lost
settlement)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, postgres_database, skip_or_fail
from tests.gateway.test_multi_instance import setup_user
from tests.processes import GatewayProcess, gateway_env

HELLO = [{"role": "user", "content": "Hello"}]  # one prompt token for the demo models
CONFIG = """
[providers.slow]
kind = "demo"
models = ["slow-demo"]
options = { delay_ms = 300 }

# One prompt token costs 0.015 USD; answers cost nothing.
[pricing.gateway-demo]
input_per_million = 15000.0
output_per_million = 0.0

[pricing.slow-demo]
input_per_million = 15000.0
output_per_million = 0.0
"""


@pytest.fixture(params=["redis", "sql"])
def two_gateways(request: pytest.FixtureRequest,
                 tmp_path: Path) -> Iterator[tuple[list[GatewayProcess], dict]]:
    backend = request.param
    settings = {"DATABASE_URL": postgres_database("budgets_multi"),
                "GATEWAY_RATE_LIMIT_BACKEND": backend}
    if backend == "redis":
        if not REDIS_URL:
            skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
        settings["REDIS_URL"] = REDIS_URL
    config = tmp_path / "gateway.toml"
    config.write_text(CONFIG)
    env = gateway_env(tmp_path, GATEWAY_CONFIG=str(config), **settings)
    procs: list[GatewayProcess] = []
    try:
        procs.append(GatewayProcess(env, tmp_path / "a.log").wait_ready())
        procs.append(GatewayProcess(env, tmp_path / "b.log").wait_ready())
        yield procs, env
    finally:
        for proc in procs:
            proc.stop()


def chat(url: str, key: str, model: str = "gateway-demo") -> int:
    return httpx.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": HELLO}, timeout=30).status_code


def spent(url: str, key: str) -> float:
    r = httpx.get(url + "/rate-limit", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    (budget,) = r.json()["budgets"]
    return budget["spent_usd"]


def test_sequential_calls_alternating_between_processes(
        two_gateways: tuple[list[GatewayProcess], dict]) -> None:
    procs, env = two_gateways
    key = setup_user(procs[0], env, budget_usd=0.04)  # enterprise: only the key's budget
    urls = [procs[i % 2].url for i in range(5)]
    assert [chat(url, key) for url in urls] == [200, 200, 200, 429, 429]
    assert spent(procs[0].url, key) == spent(procs[1].url, key) == 0.045


def test_concurrent_calls_at_the_edge_are_all_settled(
        two_gateways: tuple[list[GatewayProcess], dict]) -> None:
    procs, env = two_gateways
    key = setup_user(procs[0], env, budget_usd=0.04, budget_period="day")
    urls = [procs[i % 2].url for i in range(8)]
    with ThreadPoolExecutor(len(urls)) as pool:
        codes = Counter(pool.map(lambda url: chat(url, key, "slow-demo"), urls))
    # Each call was admitted while the spend was below 0.04: the ones admitted together
    # (up to all 8, each taking 300 ms) overshoot it, and every one of them is settled.
    admitted = codes[200]
    assert admitted >= 3 and admitted + codes[429] == 8, codes
    total = round(admitted * 0.015, 9)
    assert spent(procs[0].url, key) == spent(procs[1].url, key) == total
    assert chat(procs[1].url, key) == 429
