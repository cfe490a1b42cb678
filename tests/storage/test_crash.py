"""A real ``gateway serve`` SIGKILLed after answering 20 streams, before its writer wrote a
row: the next process on the same data dir and database stores each row exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from storage.engine import build_engine
from storage.models import InferenceRequest, UsageDaily
from tests.conftest import postgres_database, run_sync
from tests.processes import GatewayProcess, gateway_env

CALLS = 20


def _user(proc: GatewayProcess, env: dict[str, str]) -> tuple[str, str]:
    email = f"crash-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(proc.url + "/auth/register",
                   json={"email": email, "password": "correct horse 42"})
    assert r.status_code == 201, r.text
    subprocess.run([sys.executable, "-m", "gateway.cli", "set-plan", email, "enterprise"],
                   env=env, check=True, capture_output=True)  # 20 at once: above free limits
    return r.json()["user"]["id"], r.json()["apiKey"]


def _stream(url: str, key: str, i: int) -> bytes:
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gateway-demo", "stream": True,
                            "messages": [{"role": "user", "content": f"call {i}"}]}) as r:
        assert r.status_code == 200
        return r.read()


def _stored(url: str, user_id: str) -> tuple[int, int, int]:
    """Rows of the user, distinct ids among them, and their usage_daily request count."""
    async def query() -> tuple[int, int, int]:
        engine = build_engine(url)
        try:
            async with engine.connect() as conn:
                uid = uuid.UUID(user_id)
                ids = (await conn.execute(sa.select(InferenceRequest.id)
                                          .where(InferenceRequest.user_id == uid))).scalars()
                ids = list(ids)
                usage = await conn.scalar(sa.select(sa.func.coalesce(
                    sa.func.sum(UsageDaily.requests), 0)).where(UsageDaily.user_id == uid))
        finally:
            await engine.dispose()
        return len(ids), len(set(ids)), usage

    return run_sync(asyncio.run, query())


def _spooled_requests(spool: Path) -> int:
    return sum(path.read_bytes().count(b'["request",') for path in spool.glob("*.jsonl"))


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_rows_of_answered_calls_survive_sigkill(backend: str, tmp_path: Path) -> None:
    extra = {}
    if backend == "postgres":
        extra["DATABASE_URL"] = postgres_database("crash")
    # The writer would only write after 30 s: every row is still queued at the kill.
    env = gateway_env(tmp_path, GATEWAY_WRITER_FLUSH_SECONDS="30", **extra)
    url = extra.get("DATABASE_URL") or f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    first = GatewayProcess(env, tmp_path / "first.log").wait_ready()
    second = None
    try:
        user_id, key = _user(first, env)
        with ThreadPoolExecutor(CALLS) as pool:
            bodies = list(pool.map(lambda i: _stream(first.url, key, i), range(CALLS)))
        assert all(body.rstrip().endswith(b"data: [DONE]") for body in bodies)
        deadline = time.monotonic() + 10  # the spool syncs every 100 ms
        while _spooled_requests(tmp_path / "spool") < CALLS:
            assert time.monotonic() < deadline, "rows not spooled"
            time.sleep(0.02)
        first.kill()
        assert _stored(url, user_id) == (0, 0, 0)  # the writer had not written them
        second = GatewayProcess(env, tmp_path / "second.log").wait_ready()
        assert _stored(url, user_id) == (CALLS, CALLS, CALLS)
        second.stop()
        second = None
        assert list((tmp_path / "spool").iterdir()) == []  # replayed, then a clean stop
    finally:
        first.stop()
        if second is not None:
            second.stop()
