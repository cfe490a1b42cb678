"""Nothing is lost: graceful shutdown, SIGKILL and restart, and two processes on one database.

The SIGTERM, SIGKILL and multi-process tests run ``gateway serve`` as real child processes.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from gateway.app import create_app
from gateway.jobs import JobRunner
from providers.demo import compose_reply
from storage.jobs import JobStore
from storage.migrate import upgrade
from storage.models import InferenceRequest
from tests.conftest import ONE_TRY, make_settings, postgres_database, register, run_sync
from tests.legacy.support import (
    auth,
    kept_alive,
    openai_upstream,
    query,
    set_tier,
    status,
    submit,
    terminate,
    usage_totals,
    wait_final,
    wait_until,
)
from tests.processes import GatewayProcess, gateway_env
from tests.servers import FakeUpstream, Reply, recorded_openai, running, wait_for

T = InferenceRequest.__table__


def jobs_of(url: str, user_id: str) -> dict[str, sa.Row]:
    rows = query(url, sa.select(T.c.id, T.c.status, T.c.attempts, T.c.lease_owner,
                                T.c.started_at, T.c.completed_at, T.c.response, T.c.prompt,
                                T.c.error)
                 .where(T.c.user_id == uuid.UUID(user_id), T.c.source == "legacy"))
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


def progressed(view: dict) -> bool:
    """The job's call has produced tokens (or already ended)."""
    return (view["completed_at"] is not None
            or (view["progress"] or {}).get("completion_tokens", 0) > 0)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite drops the zone


def test_shutdown_without_grace_puts_running_jobs_back_counted(fresh_database: str,
                                                               tmp_path: Path) -> None:
    settings = make_settings(tmp_path, fresh_database, demo_delay_ms=200, job_workers=2,
                             job_lease_seconds=2, shutdown_grace_seconds=0)  # ~10 s a job
    with running(create_app(settings)) as first:
        acct = register(first.url)
        set_tier(first, acct.user_id, "enterprise")
        ids = [submit(first.url, acct.api_key, model="gateway-demo", prompt=f"job {i}")
               for i in range(3)]
        for job_id in ids[:2]:
            wait_until(first.url, acct.api_key, job_id, progressed)
    rows = jobs_of(fresh_database, acct.user_id)
    assert {r.status for r in rows.values()} == {"pending"}
    assert all(r.lease_owner is None and r.started_at is None for r in rows.values())
    # The demo was called for the two running jobs: those attempts count; the third never ran.
    assert [rows[i].attempts for i in ids] == [1, 1, 0]
    assert "interrupted by a shutdown" in rows[ids[0]].error
    settings = settings.model_copy(update={"demo_delay_ms": 5})
    with running(create_app(settings)) as second:
        for job_id, attempts in zip(ids, [2, 2, 1], strict=True):
            view = wait_final(second.url, acct.api_key, job_id, timeout=15)
            assert view["status"] == "completed" and view["attempts"] == attempts
            assert view["error"] is None
    assert_completed_once(fresh_database, acct.user_id, jobs_of(fresh_database, acct.user_id))


class CancelledWhilePutBack(JobStore):
    """The user's cancel lands just before the worker puts the job back to pending."""

    def __init__(self, engine: Any, user_id: str) -> None:
        super().__init__(engine)
        self.user_id = uuid.UUID(user_id)

    async def requeue(self, job_id: uuid.UUID, owner: str, **kw: Any) -> bool:
        assert await self.cancel(job_id, self.user_id) == "stopping"
        return await super().requeue(job_id, owner, **kw)


def test_a_cancel_while_a_job_is_put_back_keeps_what_it_produced(
        fresh_database: str, upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.script(kept_alive(events=2))  # the role, then "Bon"; then only keep-alives
    providers = {"fake-openai": {"kind": "openai", "base_url": upstream.url + "/v1",
                                 "api_key": "sk-up", "models": ["gpt-4o-mini"], **ONE_TRY}}
    settings = make_settings(tmp_path, fresh_database, providers=providers, job_workers=0)
    with running(create_app(settings)) as gateway:
        acct = register(gateway.url)
        state = gateway.state
        runner = JobRunner(CancelledWhilePutBack(state.engine, acct.user_id),
                           state.call_services, state.catalog, workers=1, lease_seconds=60,
                           max_attempts=3)
        job_id = submit(gateway.url, acct.api_key, model="gpt-4o-mini", prompt="cut short")

        async def start() -> None:
            runner.start()

        async def produced() -> int:
            return runner.progress(uuid.UUID(job_id)) or 0

        gateway.run(start())
        assert wait_for(lambda: gateway.run(produced()) > 0, 10)
        gateway.run(runner.stop(0))  # interrupted at once: the put-back meets the cancel
        row = jobs_of(fresh_database, acct.user_id)[job_id]
        assert (row.status, row.error) == ("cancelled", "Cancelled by the user.")
        assert row.response == "Bon" and row.completed_at is not None
        tokens = query(fresh_database, sa.select(T.c.completion_tokens)
                       .where(T.c.id == uuid.UUID(job_id)))[0][0]
        assert tokens == gateway.state.tokens.text("Bon") > 0
        assert usage_totals(fresh_database, uuid.UUID(acct.user_id)) == (1, 0)
        assert row.attempts == 1

        # Held back by the limiter instead: nothing was called, so it was never attempted.
        r = httpx.post(gateway.url + "/auth/keys", headers=auth(acct.token),
                       json={"name": "few tokens", "limits": {"tokens_per_minute": 10}})
        assert r.status_code == 201, r.text
        key = r.json()["key"]  # a call reserves its max_tokens (1024) up front: refused
        calls = len(upstream.received)
        held = submit(gateway.url, key, model="gpt-4o-mini", prompt="held back")
        runner = JobRunner(CancelledWhilePutBack(state.engine, acct.user_id),
                           state.call_services, state.catalog, workers=1, lease_seconds=60,
                           max_attempts=3)
        gateway.run(start())
        assert wait_for(lambda: jobs_of(fresh_database, acct.user_id)[held].completed_at
                        is not None, 10)
        gateway.run(runner.stop(0))
        row = jobs_of(fresh_database, acct.user_id)[held]
        assert (row.status, row.attempts, row.response) == ("cancelled", 0, None)
        assert len(upstream.received) == calls


def test_sigterm_lets_running_jobs_finish_once(fresh_database: str, tmp_path: Path) -> None:
    upstream = FakeUpstream()
    upstream.script(Reply.by_event("openai_text.sse", delay=0.2))  # about 5 s a call
    env = gateway_env(tmp_path, DATABASE_URL=fresh_database, GATEWAY_JOB_WORKERS="5",
                      GATEWAY_MIGRATE_ON_START="false",
                      GATEWAY_PROVIDERS=openai_upstream(upstream),
                      GATEWAY_SHUTDOWN_GRACE_SECONDS="30")
    proc = GatewayProcess(env, tmp_path / "first.log")
    try:
        proc.wait_ready()
        acct = register(proc.url)
        set_tier(fresh_database, acct.user_id, "enterprise")
        ids = [submit(proc.url, acct.api_key, model="gpt-4o-mini", prompt=f"job {i}")
               for i in range(5)]
        # Watched in this process, not polled over HTTP: on a loaded machine the polling
        # took longer than the calls.
        assert wait_for(lambda: len(upstream.received) == 5, 30)
        running_at_signal = 5 - upstream.completed
        terminate(proc)
        assert running_at_signal > 0, "every job ended before SIGTERM: nothing was tested"
        rows = jobs_of(fresh_database, acct.user_id)
        text = recorded_openai("openai_text.sse")[0]
        for job_id in ids:
            row = rows[job_id]
            assert (row.status, row.attempts, row.response) == ("completed", 1, text), row
        # One upstream call per job, each to its end; one usage count per job.
        assert (len(upstream.received), upstream.completed, upstream.disconnects) == (5, 5, 0)
        assert usage_totals(fresh_database, uuid.UUID(acct.user_id)) == (5, 5)
    finally:
        proc.stop()
        upstream.stop()


class OpenStream(threading.Thread):
    """A ``/v1`` stream held open in the background; ``first`` is set at its first bytes."""

    def __init__(self, url: str, key: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key = url, key
        self.first = threading.Event()
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        body = {"model": "gpt-4o-mini", "stream": True,
                "messages": [{"role": "user", "content": "a stream held open"}]}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body,
                              headers=auth(self.key), timeout=120) as r:
                for _ in r.iter_raw():
                    self.first.set()
        except httpx.HTTPError as exc:  # the server cut it at the end of the grace period
            self.error = exc


def test_jobs_past_the_grace_period_are_retried_with_the_attempt_counted(
        fresh_database: str, tmp_path: Path) -> None:
    grace = 10.0
    upstream = FakeUpstream()
    upstream.script(kept_alive())  # every call stays open until the gateway hangs up
    env = gateway_env(tmp_path, DATABASE_URL=fresh_database, GATEWAY_JOB_WORKERS="2",
                      GATEWAY_MIGRATE_ON_START="false",
                      GATEWAY_PROVIDERS=openai_upstream(upstream), GATEWAY_DEMO_DELAY_MS="120",
                      GATEWAY_SHUTDOWN_GRACE_SECONDS=str(grace))
    procs: list[GatewayProcess] = []
    try:
        first = GatewayProcess(env, tmp_path / "first.log")
        procs.append(first)
        first.wait_ready()
        acct = register(first.url)
        set_tier(fresh_database, acct.user_id, "enterprise")
        key = acct.api_key
        stuck = submit(first.url, key, model="gpt-4o-mini", prompt="outlives the grace")
        wait_until(first.url, key, stuck, progressed)
        stream = OpenStream(first.url, key)  # keeps uvicorn draining for the whole grace
        assert stream.first.wait(10)
        quick = submit(first.url, key, model="gateway-demo", prompt="ends within the grace")
        wait_until(first.url, key, quick, progressed)  # the demo takes about 6 s
        waiting = submit(first.url, key, model="gpt-4o-mini", prompt="waits for a worker")
        signalled = datetime.now(UTC)
        elapsed = terminate(first)
        stream.join(10)
        assert isinstance(stream.error, httpx.HTTPError)  # cut when the grace ran out

        rows = jobs_of(fresh_database, acct.user_id)
        assert aware(rows[quick].completed_at) > signalled, "ended before SIGTERM: no test"
        assert (rows[quick].status, rows[quick].attempts) == ("completed", 1)
        # The slot it freed during the drain took no new job: claiming stopped at SIGTERM.
        assert (rows[waiting].status, rows[waiting].attempts) == ("pending", 0)
        assert rows[waiting].started_at is None
        assert len(upstream.received) == 2  # the stuck job and the stream, nothing else
        # Interrupted after its upstream was called: back to pending, the attempt counted.
        assert (rows[stuck].status, rows[stuck].attempts) == ("pending", 1)
        assert rows[stuck].lease_owner is None and "interrupted" in rows[stuck].error
        # The jobs' grace ran alongside the stream's, from the signal, not after it.
        assert elapsed < grace + 5, elapsed  # counted from the lifespan it would be 2 x grace

        upstream.script(Reply.by_event("openai_text.sse"))
        second = GatewayProcess(env, tmp_path / "second.log")
        procs.append(second)
        second.wait_ready()
        rows = wait_all_final(fresh_database, acct.user_id, 3, timeout=30)
        assert {i: (r.status, r.attempts) for i, r in rows.items()} == {
            stuck: ("completed", 2), quick: ("completed", 1), waiting: ("completed", 1)}
        text = recorded_openai("openai_text.sse")[0]
        assert rows[stuck].response == rows[waiting].response == text
        assert len(upstream.received) == 2  # once more for the stuck job, once for the other
        # Three jobs, each counted once, and the stream that was cut (not a success).
        assert usage_totals(fresh_database, uuid.UUID(acct.user_id)) == (4, 3)
    finally:
        for proc in procs:
            proc.stop()
        upstream.stop()


def test_sigkill_and_restart_finishes_every_job_once(fresh_database: str,
                                                     tmp_path: Path) -> None:
    # About 15 s a job in the first process, so three are surely mid-call when it is killed
    # (at 1 s a job they sometimes ended first on a loaded machine); fast in the second.
    env = gateway_env(tmp_path, DATABASE_URL=fresh_database, GATEWAY_DEMO_DELAY_MS="300",
                      GATEWAY_JOB_WORKERS="3", GATEWAY_JOB_LEASE_SECONDS="2",
                      GATEWAY_MIGRATE_ON_START="false")
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

        second = GatewayProcess({**env, "GATEWAY_DEMO_DELAY_MS": "5"},
                                tmp_path / "second.log")
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
