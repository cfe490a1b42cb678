"""Helpers for the legacy API tests: HTTP calls, polling, database reads, gateway processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import sqlalchemy as sa

from storage.engine import build_engine
from storage.models import InferenceRequest, UsageDaily, User
from tests.conftest import SECRET, run_sync
from tests.servers import FIXTURES, GatewayServer, Reply

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


def sse_events(name: str) -> list[bytes]:
    """A recording split into its events, one piece each."""
    data = (FIXTURES / name).read_bytes()
    return [event + b"\n\n" for event in data.split(b"\n\n") if event.strip()]


def streamed(name: str, **kw: Any) -> Reply:
    return Reply(headers={"content-type": "text/event-stream"}, pieces=sse_events(name), **kw)


def recorded_text(name: str) -> str:
    """The assistant text an OpenAI SSE recording carries."""
    out = []
    for event in sse_events(name):
        payload = event.decode().removeprefix("data: ").strip()
        if payload == "[DONE]":
            continue
        for choice in orjson.loads(payload)["choices"]:
            out.append(choice["delta"].get("content") or "")
    return "".join(out)


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GatewayProcess:
    """``gateway serve`` as a real child process on a loopback port."""

    def __init__(self, data_dir: Path, database_url: str | None, log: Path,
                 **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("GATEWAY_", "OPENAI", "ANTHROPIC", "TOGETHER", "REDIS"))
               and k != "DATABASE_URL"}
        env.update({"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_JWT_SECRET": SECRET,
                    "GATEWAY_KEY_HASH_SECRET": SECRET + "k", "GATEWAY_BCRYPT_ROUNDS": "4",
                    "GATEWAY_PORT": str(self.port), "GATEWAY_HOST": "127.0.0.1",
                    "GATEWAY_MIGRATE_ON_START": "false", "GATEWAY_AUTH_CACHE_SECONDS": "0",
                    "GATEWAY_WRITER_FLUSH_SECONDS": "0.02"})
        if database_url:
            env["DATABASE_URL"] = database_url
        env.update({f"GATEWAY_{k.upper()}": str(v) for k, v in settings.items()})
        self._log = open(log, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--log-level", "warning"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError("gateway did not become healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@contextlib.contextmanager
def processes(*procs: GatewayProcess) -> Iterator[None]:
    """Stop every process on the way out, whatever happened."""
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


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
