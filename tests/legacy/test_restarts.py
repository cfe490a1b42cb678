"""Nothing is lost: graceful shutdown, SIGKILL and restart, and two processes on one database.

The SIGKILL and multi-process tests run ``gateway serve`` as real child processes.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.app import create_app
from providers.demo import compose_reply
from storage.migrate import upgrade
from storage.models import InferenceRequest
from tests.conftest import make_settings, postgres_database, register, run_sync
from tests.legacy.support import (
    query,
    set_tier,
    status,
    submit,
    usage_totals,
    wait_final,
    wait_until,
)
from tests.processes import GatewayProcess, gateway_env
from tests.servers import running

T = InferenceRequest.__table__


def jobs_of(url: str, user_id: str) -> dict[str, sa.Row]:
    rows = query(url, sa.select(T.c.id, T.c.status, T.c.attempts, T.c.lease_owner,
                                T.c.started_at, T.c.completed_at, T.c.response, T.c.prompt)
                 .where(T.c.user_id == uuid.UUID(user_id)))
    return {str(row.id): row for row in rows}


def wait_all_final(url: str, user_id: str, count: int, timeout: float) -> dict[str, sa.Row]:
    deadline = time.monotonic() + timeout
    while True:
        rows = jobs_of(url, user_id)
        if len(rows) == count and all(r.status in ("completed", "failed", "cancelled")
                                      and r.completed_at is not None for r in rows.values()):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"jobs not final: {[r.status for r in rows.values()]}")
        time.sleep(0.1)


def assert_completed_once(url: str, user_id: str, rows: dict[str, sa.Row]) -> None:
    for job_id, row in rows.items():
        assert row.status == "completed", (job_id, row)
        question = row.prompt
        assert row.response == compose_reply([{"role": "user", "content": question}])
    # The usage counters are added in the fenced final write: one per completion.
    assert usage_totals(url, uuid.UUID(user_id)) == (len(rows), len(rows))


def test_graceful_shutdown_puts_running_jobs_back(fresh_database: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fresh_database, demo_delay_ms=25, job_workers=2,
                             job_lease_seconds=2)
    with running(create_app(settings)) as first:
        acct = register(first.url)
        set_tier(first, acct.user_id, "enterprise")
        ids = [submit(first.url, acct.api_key, model="gateway-demo", prompt=f"job {i}")
               for i in range(3)]
        wait_until(first.url, acct.api_key, ids[0],
                   lambda v: (v["progress"] or {}).get("completion_tokens", 0) > 0)
    rows = jobs_of(fresh_database, acct.user_id)
    assert {r.status for r in rows.values()} == {"pending"}
    assert all(r.attempts == 0 and r.lease_owner is None and r.started_at is None
               for r in rows.values())
    with running(create_app(settings)) as second:
        for job_id in ids:
            view = wait_final(second.url, acct.api_key, job_id, timeout=15)
            assert view["status"] == "completed" and view["attempts"] == 1
    assert_completed_once(fresh_database, acct.user_id, jobs_of(fresh_database, acct.user_id))


def test_sigkill_and_restart_finishes_every_job_once(fresh_database: str,
                                                     tmp_path: Path) -> None:
    env = gateway_env(tmp_path, DATABASE_URL=fresh_database, GATEWAY_DEMO_DELAY_MS="20",
                      GATEWAY_JOB_WORKERS="3", GATEWAY_JOB_LEASE_SECONDS="2")
    procs: list[GatewayProcess] = []
    try:
        first = GatewayProcess(env, tmp_path / "first.log")
        procs.append(first)
        first.wait_ready()
        acct = register(first.url)
        set_tier(fresh_database, acct.user_id, "enterprise")
        ids = [submit(first.url, acct.api_key, model="gateway-demo", prompt=f"job {i}")
               for i in range(6)]
        for job_id in ids[:3]:
            wait_until(first.url, acct.api_key, job_id,
                       lambda v: (v["progress"] or {}).get("completion_tokens", 0) > 0)
        first.kill()
        before = jobs_of(fresh_database, acct.user_id)
        interrupted = {i for i, r in before.items() if r.status == "processing"}
        assert len(interrupted) == 3 and all(before[i].status == "pending" for i in ids[3:])
        assert {before[i].lease_owner for i in interrupted} != {None}

        second = GatewayProcess(env, tmp_path / "second.log")
        procs.append(second)
        second.wait_ready()
        rows = wait_all_final(fresh_database, acct.user_id, 6, timeout=30)
        assert_completed_once(fresh_database, acct.user_id, rows)
        for job_id, row in rows.items():
            assert row.attempts == (2 if job_id in interrupted else 1), (job_id, row)
        assert status(second.url, acct.api_key, ids[0])["status"] == "completed"
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.postgres
def test_two_processes_share_a_burst_of_jobs(tmp_path: Path) -> None:
    url = postgres_database("burst")
    run_sync(upgrade, url)
    env = gateway_env(tmp_path, DATABASE_URL=url, GATEWAY_DEMO_DELAY_MS="3",
                      GATEWAY_JOB_WORKERS="4", GATEWAY_JOB_LEASE_SECONDS="2")
    procs = [GatewayProcess(env, tmp_path / f"p{i}.log") for i in range(2)]
    try:
        for proc in procs:
            proc.wait_ready()
        acct = register(procs[0].url)
        set_tier(url, acct.user_id, "enterprise")
        for i in range(40):
            submit(procs[i % 2].url, acct.api_key, model="gateway-demo", prompt=f"burst {i}")
        rows = wait_all_final(url, acct.user_id, 40, timeout=30)
        assert_completed_once(url, acct.user_id, rows)
        assert all(row.attempts == 1 for row in rows.values())
        assert len({row.lease_owner for row in rows.values()}) == 2  # both did work
    finally:
        for proc in procs:
            proc.stop()
