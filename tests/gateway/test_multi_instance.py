"""Several real gateway processes sharing Redis or PostgreSQL keep limits exact; Redis
going away follows the configured policy while the gateway keeps serving."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REDIS_URL, postgres_database, skip_or_fail
from tests.processes import GatewayProcess, RedisProcess, gateway_env, set_plan

MESSAGES = [{"role": "user", "content": "Hello"}]


def setup_user(proc: GatewayProcess, env: dict[str, str], **limits: int) -> str:
    """Register on ``proc``, move to enterprise, return a key carrying ``limits``."""
    email = f"multi-{proc.port}@example.com"
    r = httpx.post(proc.url + "/auth/register",
                   json={"email": email, "password": "correct horse 42"})
    assert r.status_code == 201, r.text
    set_plan(env, email)
    # Keys are managed with the session (JWT); an API key may not mint keys.
    r = httpx.post(proc.url + "/auth/keys",
                   headers={"Authorization": f"Bearer {r.json()['token']}"},
                   json={"name": "limited", "limits": limits})
    assert r.status_code == 201, r.text
    return r.json()["key"]


def burst(urls: list[str], key: str, n: int) -> Counter:
    def one(i: int) -> int:
        return httpx.post(urls[i % len(urls)] + "/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}"}, timeout=30,
                          json={"model": "gateway-demo", "messages": MESSAGES}).status_code
    with ThreadPoolExecutor(n) as pool:
        return Counter(pool.map(one, range(n)))


@pytest.fixture
def two_gateways(request: pytest.FixtureRequest,
                 tmp_path: Path) -> Iterator[tuple[list[GatewayProcess], dict]]:
    backend = request.param
    database = postgres_database("multi")
    settings = {"DATABASE_URL": database, "GATEWAY_RATE_LIMIT_BACKEND": backend}
    if backend == "redis":
        if not REDIS_URL:
            skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
        settings["REDIS_URL"] = REDIS_URL
    config = tmp_path / "gateway.toml"
    config.write_text('[providers.slow]\nkind = "demo"\nmodels = ["slow-demo"]\n'
                      "options = { delay_ms = 300 }\n")
    env = gateway_env(tmp_path, GATEWAY_CONFIG=str(config), **settings)
    procs: list[GatewayProcess] = []
    try:
        procs.append(GatewayProcess(env, tmp_path / "a.log").wait_ready())
        procs.append(GatewayProcess(env, tmp_path / "b.log").wait_ready())
        yield procs, env
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.parametrize("two_gateways", ["redis", "sql"], indirect=True)
def test_requests_per_minute_exact_across_processes(
        two_gateways: tuple[list[GatewayProcess], dict]) -> None:
    procs, env = two_gateways
    key = setup_user(procs[0], env, requests_per_minute=10)
    codes = burst([p.url for p in procs], key, 40)
    assert codes == Counter({200: 10, 429: 30})


@pytest.mark.parametrize("two_gateways", ["redis", "sql"], indirect=True)
def test_concurrency_exact_across_processes(
        two_gateways: tuple[list[GatewayProcess], dict]) -> None:
    procs, env = two_gateways
    key = setup_user(procs[0], env, concurrent_requests=3)
    streams = []
    try:
        for i in range(3):
            ctx = httpx.stream("POST", procs[i % 2].url + "/v1/chat/completions",
                               headers={"X-API-Key": key}, timeout=30,
                               json={"model": "slow-demo", "messages": MESSAGES,
                                     "stream": True})
            r = ctx.__enter__()
            assert r.status_code == 200, r.read()
            it = r.iter_bytes()
            next(it)
            streams.append((ctx, it))
        codes = burst([p.url for p in procs], key, 10)
        assert codes == Counter({429: 10})
    finally:
        for ctx, _ in streams:
            ctx.__exit__(None, None, None)
    status = httpx.get(procs[1].url + "/rate-limit", headers={"X-API-Key": key}).json()
    assert status["concurrent"]["in_use"] <= 3


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_outage_follows_policy(tmp_path: Path, fail_open: bool) -> None:
    redis = RedisProcess(tmp_path)
    env = gateway_env(tmp_path, GATEWAY_RATE_LIMIT_BACKEND="redis", REDIS_URL=redis.url,
                      GATEWAY_RATE_LIMIT_FAIL_OPEN=str(fail_open).lower())
    proc = GatewayProcess(env, tmp_path / "gw.log").wait_ready()
    try:
        r = httpx.post(proc.url + "/auth/register",
                       json={"email": "outage@example.com", "password": "correct horse 42"})
        key = r.json()["apiKey"]
        chat = {"model": "gateway-demo", "messages": MESSAGES}
        auth = {"X-API-Key": key}
        assert httpx.post(proc.url + "/v1/chat/completions", json=chat,
                          headers=auth).status_code == 200
        redis.stop()
        r = httpx.post(proc.url + "/v1/chat/completions", json=chat, headers=auth, timeout=10)
        if fail_open:
            assert r.status_code == 200, r.text
        else:
            assert r.status_code == 503
            assert r.json()["error"]["code"] == "rate_limiter_unavailable"
        assert httpx.get(proc.url + "/health").status_code == 200
        assert httpx.get(proc.url + "/ready").json()["checks"]["redis"].startswith("error")
        redis.start()
        r = httpx.post(proc.url + "/v1/chat/completions", json=chat, headers=auth, timeout=10)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-remaining-requests"] != ""
    finally:
        proc.stop()
        redis.stop()
