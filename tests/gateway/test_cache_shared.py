"""Two real gateway processes sharing Redis share one response cache: an answer one of
them kept is a hit on the other, and it expires there by its TTL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.cache import chat_key
from gateway.chat.request import parse_chat
from tests.conftest import REDIS_URL, postgres_database, run_sync, skip_or_fail
from tests.processes import GatewayProcess, gateway_env
from tests.servers import FakeUpstream, Reply

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello"}],
        "stream": True}
TTL = 3.0


@pytest.fixture
def two_gateways(upstream: FakeUpstream, tmp_path: Path) -> Iterator[list[GatewayProcess]]:
    if not REDIS_URL:
        skip_or_fail("Redis not available: set GATEWAY_TEST_REDIS_URL")
    config = tmp_path / "gateway.toml"
    config.write_text(f'[providers.fake-openai]\nkind = "openai"\nbase_url = "{upstream.url}/v1"\n'
                      'api_key = "sk-up"\nmodels = ["gpt-4o-mini"]\nmax_retries = 0\n')
    env = gateway_env(tmp_path, GATEWAY_CONFIG=str(config), REDIS_URL=REDIS_URL,
                      DATABASE_URL=postgres_database("cache"),
                      GATEWAY_CACHE_TTL_SECONDS=str(TTL))
    procs: list[GatewayProcess] = []
    try:
        procs.append(GatewayProcess(env, tmp_path / "a.log").wait_ready())
        procs.append(GatewayProcess(env, tmp_path / "b.log").wait_ready())
        yield procs
    finally:
        for proc in procs:
            proc.stop()


def cache_state(proc: GatewayProcess, key: str) -> str:
    r = httpx.post(proc.url + "/v1/chat/completions", json=BODY, timeout=20,
                   headers={"Authorization": f"Bearer {key}", "x-gateway-cache": "on"})
    assert r.status_code == 200 and r.content.endswith(b"data: [DONE]\n\n")
    return r.headers["x-gateway-cache"]


def stored(key: str) -> bool:
    from redis.asyncio import Redis

    async def run() -> bool:
        redis = Redis.from_url(REDIS_URL)
        try:
            return bool(await redis.exists(key))
        finally:
            await redis.aclose()
    return run_sync(asyncio.run, run())


def test_two_processes_share_the_cache(two_gateways: list[GatewayProcess],
                                       upstream: FakeUpstream) -> None:
    a, b = two_gateways
    upstream.script(Reply.recording("openai_text.sse", split=13))
    r = httpx.post(a.url + "/auth/register",
                   json={"email": f"cache-{uuid.uuid4().hex[:8]}@example.com",
                         "password": "correct horse 42"})
    assert r.status_code == 201, r.text
    api_key, user_id = r.json()["apiKey"], uuid.UUID(r.json()["user"]["id"])
    entry = chat_key(user_id, "gpt-4o-mini", parse_chat(BODY).request)

    assert cache_state(a, api_key) == "miss"
    assert cache_state(b, api_key) == "hit"
    assert cache_state(a, api_key) == "hit"
    assert upstream.hits() == 1
    # Expired by Redis (PX) for both: polled, with a deadline, on the key itself.
    deadline = time.monotonic() + TTL + 10
    while stored(entry):
        assert time.monotonic() < deadline, "the entry outlived its TTL"
        time.sleep(0.05)
    assert cache_state(b, api_key) == "miss"
    assert cache_state(a, api_key) == "hit"
    assert upstream.hits() == 2
