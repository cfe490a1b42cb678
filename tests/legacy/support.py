"""Helpers for the legacy API tests: HTTP calls, polling, database reads, gateway processes."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from storage.engine import build_engine
from storage.models import InferenceRequest, UsageDaily, User
from tests.conftest import ONE_TRY, run_sync
from tests.processes import GatewayProcess
from tests.servers import FakeUpstream, GatewayServer, Reply, recording_events

FINAL = ("completed", "failed", "cancelled")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def submit(base: str, key: str, **body: Any) -> str:
    r = httpx.post(base + "/inference", json=body, headers=auth(key))
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/inference/{r.json()['id']}"
    return r.json()["id"]


def status(base: str, key: str, job_id: str) -> dict[str, Any]:
    r = httpx.get(f"{base}/inference/{job_id}", headers=auth(key))
    assert r.status_code == 200, r.text
    return r.json()


def wait_until(base: str, key: str, job_id: str, predicate: Any,
               timeout: float = 10.0) -> dict[str, Any]:
    """Poll the job's status until ``predicate(view)`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        view = status(base, key, job_id)
        if predicate(view):
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck: {view}")
        time.sleep(0.03)


def wait_final(base: str, key: str, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """Poll until the job is final and its outcome is recorded."""
    return wait_until(base, key, job_id,
                      lambda v: v["status"] in FINAL and v["completed_at"] is not None, timeout)


def query(url: str, stmt: Any) -> list[Any]:
    """Run one statement on a fresh engine (for tests that run outside a gateway's loop)."""
    async def run() -> list[Any]:
        engine = build_engine(url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(stmt)
                return list(result.all()) if result.returns_rows else []
        finally:
            await engine.dispose()
    return run_sync(asyncio.run, run())


def usage_totals(url: str, user_id: Any) -> tuple[int, int]:
    """(requests, succeeded) summed over the user's usage_daily rows."""
    row = query(url, sa.select(sa.func.coalesce(sa.func.sum(UsageDaily.requests), 0),
                               sa.func.coalesce(sa.func.sum(UsageDaily.succeeded), 0))
                .where(UsageDaily.user_id == user_id))[0]
    return int(row[0]), int(row[1])


def db(gateway: GatewayServer, stmt: Any) -> list[Any]:
    """Run a statement on the running gateway's engine."""
    async def run() -> list[Any]:
        async with gateway.state.engine.begin() as conn:
            result = await conn.execute(stmt)
            return list(result.all()) if result.returns_rows else []
    return gateway.run(run())


def rows_of(gateway: GatewayServer, user_id: str) -> int:
    return db(gateway, sa.select(sa.func.count()).select_from(InferenceRequest)
              .where(InferenceRequest.user_id == uuid.UUID(user_id)))[0][0]


def set_tier(target: GatewayServer | str, user_id: str, tier: str) -> None:
    """Move a user to another plan, through a running gateway or a database URL."""
    stmt = sa.update(User).where(User.id == uuid.UUID(user_id)).values(subscription_tier=tier)
    if isinstance(target, GatewayServer):
        db(target, stmt)
    else:
        query(target, stmt)


def kept_alive(events: int = 3, seconds: float = 120.0) -> Reply:
    """The first ``events`` of the recorded OpenAI stream, then only keep-alive comments.

    The call stays open, and never reaches the gateway's read timeout, until the gateway
    hangs up: a job on it runs until it is cancelled or interrupted.
    """
    pause = 0.2
    return Reply(pieces=recording_events("openai_text.sse")[:events]
                 + [b": keep-alive\n\n"] * int(seconds / pause), delay=pause)


def openai_upstream(upstream: FakeUpstream) -> str:
    """``GATEWAY_PROVIDERS`` for a process whose ``gpt-4o-mini`` is the fake upstream."""
    return orjson.dumps({"fake-openai": {
        "kind": "openai", "base_url": upstream.url + "/v1", "api_key": "sk-up",
        "models": {"gpt-4o-mini": "gpt-4o-mini"}, **ONE_TRY}}).decode()


def terminate(proc: GatewayProcess, timeout: float = 60.0) -> float:
    """SIGTERM the process, as a process manager stops it; seconds until it exited."""
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    proc.proc.wait(timeout)
    return time.monotonic() - started
