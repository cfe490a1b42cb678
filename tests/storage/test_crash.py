"""A real ``gateway serve`` SIGKILLed before its writer wrote a row: the next process on the
same data dir and database stores each row exactly once, the answered calls' rows as they
were and the calls still streaming at the kill as failed."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from storage.engine import build_engine
from storage.models import InferenceRequest, UsageDaily
from storage.spool import STOPPED
from tests.conftest import postgres_database, run_sync
from tests.processes import GatewayProcess, gateway_env, set_plan

CALLS = 20


def _user(proc: GatewayProcess, env: dict[str, str]) -> tuple[str, str]:
    email = f"crash-{uuid.uuid4().hex[:8]}@example.com"
    r = httpx.post(proc.url + "/auth/register",
                   json={"email": email, "password": "correct horse 42"})
    assert r.status_code == 201, r.text
    set_plan(env, email)  # 20 at once: above free limits
    return r.json()["user"]["id"], r.json()["apiKey"]


def _stream(url: str, key: str, i: int) -> bytes:
    with httpx.stream("POST", url + "/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": "gateway-demo", "stream": True,
                            "messages": [{"role": "user", "content": f"call {i}"}]}) as r:
        assert r.status_code == 200
        return r.read()


def _stored(url: str, user_id: str) -> tuple[int, int, int, dict]:
    """Rows of the user, distinct ids among them, their usage_daily request count, and
    how many rows have each (status, error)."""
    async def query() -> tuple[int, int, int, dict]:
        engine = build_engine(url)
        try:
            async with engine.connect() as conn:
                uid = uuid.UUID(user_id)
                rows = (await conn.execute(
                    sa.select(InferenceRequest.id, InferenceRequest.status,
                              InferenceRequest.error)
                    .where(InferenceRequest.user_id == uid))).all()
                usage = await conn.scalar(sa.select(sa.func.coalesce(
                    sa.func.sum(UsageDaily.requests), 0)).where(UsageDaily.user_id == uid))
        finally:
            await engine.dispose()
        kinds: dict = {}
        for row in rows:
            kinds[(row.status, row.error)] = kinds.get((row.status, row.error), 0) + 1
        return len(rows), len({row.id for row in rows}), usage, kinds

    return run_sync(asyncio.run, query())


def _spooled(spool: Path, marker: bytes) -> int:
    return sum(path.read_bytes().count(marker) for path in spool.glob("*.jsonl"))


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10  # the spool syncs every 100 ms
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _env(backend: str, tmp_path: Path, **env: str) -> tuple[dict[str, str], str]:
    extra = {}
    if backend == "postgres":
        extra["DATABASE_URL"] = postgres_database("crash")
    # The writer would only write after an hour: every row is still queued at the kill.
    config = tmp_path / "gateway.toml"
    config.write_text('[providers.slow]\nkind = "demo"\nmodels = ["slow-demo"]\n'
                      "options = { delay_ms = 1000 }\n")
    url = extra.get("DATABASE_URL") or f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    return gateway_env(tmp_path, GATEWAY_WRITER_FLUSH_SECONDS="3600", GATEWAY_CONFIG=str(config),
                       **extra, **env), url


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_calls_answered_or_streaming_at_sigkill_are_each_stored_once(
        backend: str, tmp_path: Path) -> None:
    env, url = _env(backend, tmp_path)
    first = GatewayProcess(env, tmp_path / "first.log").wait_ready()
    opened = threading.Semaphore(0)

    def slow_stream(i: int) -> None:
        with httpx.stream("POST", first.url + "/v1/chat/completions", timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "slow-demo", "stream": True,
                                "messages": [{"role": "user", "content": f"slow {i}"}]}) as r:
            assert r.status_code == 200
            opened.release()
            try:
                for _ in r.iter_bytes():
                    pass
            except httpx.HTTPError:
                pass  # the gateway was killed mid-stream

    try:
        user_id, key = _user(first, env)
        with ThreadPoolExecutor(CALLS) as pool:
            bodies = list(pool.map(lambda i: _stream(first.url, key, i), range(CALLS)))
            assert all(body.rstrip().endswith(b"data: [DONE]") for body in bodies)
            streaming = [pool.submit(slow_stream, i) for i in range(CALLS)]
            for _ in range(CALLS):
                assert opened.acquire(timeout=30), "streams did not open"
            spool = tmp_path / "spool"
            # Answered calls' rows, and the started records of the calls still streaming.
            _wait(lambda: _spooled(spool, b'["request",') >= CALLS
                  and _spooled(spool, b'"prompt":"slow ') >= CALLS, "calls not spooled")
            first.kill()
            for call in streaming:
                call.result()
    finally:
        first.stop()
    assert _stored(url, user_id) == (0, 0, 0, {})  # the writer had not written them
    second = GatewayProcess(env, tmp_path / "second.log").wait_ready()
    try:
        assert _stored(url, user_id) == (2 * CALLS, 2 * CALLS, 2 * CALLS, {
            ("completed", None): CALLS, ("failed", STOPPED): CALLS})
    finally:
        second.stop()
    assert list((tmp_path / "spool").iterdir()) == []  # replayed, then a clean stop
