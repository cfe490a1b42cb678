"""``gateway serve --workers 2`` on the embedded defaults (SQLite, no Redis): plan limits
and login throttling stay exact across the workers, and ``/rate-limit`` shows the total."""

from __future__ import annotations

import http.client
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.ratelimit import MemoryRateLimiter
from gateway.ratelimit.sql_backend import SqlRateLimiter
from storage.migrate import upgrade
from tests.conftest import make_settings
from tests.processes import GatewayProcess, accepting_pid, child_pids, gateway_env, set_plan
from tests.servers import GatewayServer

WORKERS, RPM, CALLS = 2, 10, 30
LOGINS_PER_IP, LOGINS = 5, 12
MESSAGES = [{"role": "user", "content": "Hello"}]


class Workers:
    """A ``--workers 2`` gateway and its worker pids."""

    def __init__(self, proc: GatewayProcess, env: dict[str, str], log: Path) -> None:
        self.proc, self.env, self.log = proc, env, log
        self.data_dir = Path(env["GATEWAY_DATA_DIR"])
        self.pids: set[int] = set()  # the workers, once each has answered
        self._children: set[int] = set()  # the workers and multiprocessing's helpers

    def request(self, method: str, path: str, *, json_body: object = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict, int]:
        """(status, JSON body, worker pid), on a connection of its own."""
        conn = http.client.HTTPConnection("127.0.0.1", self.proc.port, timeout=30)
        try:
            conn.connect()
            pid = accepting_pid(conn.sock, self._children)
            body = None if json_body is None else json.dumps(json_body)
            conn.request(method, path, body=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
            response = conn.getresponse()
            return response.status, json.loads(response.read()), pid
        finally:
            conn.close()

    def wait_for_every_worker(self, timeout: float = 45.0) -> None:
        """Poll /health on fresh connections until each worker has answered once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._children = child_pids(self.proc.proc.pid)
            try:
                self.pids.add(self.request("GET", "/health")[2])
            except (OSError, LookupError):
                pass
            if len(self.pids) == WORKERS:
                return
        raise AssertionError(f"children {sorted(self._children)}, answered: {sorted(self.pids)}")


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """One gateway for the module: its tests count against different keys and limits."""
    tmp_path = tmp_path_factory.mktemp("workers")
    env = gateway_env(tmp_path / "data",
                      GATEWAY_LOGIN_ATTEMPTS_PER_IP=str(LOGINS_PER_IP))
    log = tmp_path / "serve.log"
    proc = GatewayProcess(env, log, args=["--workers", str(WORKERS)])
    try:
        proc.wait_ready()
        gateway = Workers(proc, env, log)
        gateway.wait_for_every_worker()
        yield gateway
    finally:
        proc.stop()


def limited_key(gateway: Workers, **limits: int) -> str:
    """Register, move to enterprise (high concurrency), return a key carrying ``limits``."""
    email = f"workers-{gateway.proc.port}@example.com"
    status, body, _ = gateway.request("POST", "/auth/register",
                                      json_body={"email": email, "password": "correct horse 42"})
    assert status == 201, body
    set_plan(gateway.env, email)
    status, body, _ = gateway.request("POST", "/auth/keys",
                                      headers={"Authorization": f"Bearer {body['token']}"},
                                      json_body={"name": "limited", "limits": limits})
    assert status == 201, body
    return body["key"]


def test_requests_per_minute_exact_across_workers(workers: Workers) -> None:
    key = limited_key(workers, requests_per_minute=RPM)
    auth = {"Authorization": f"Bearer {key}"}

    def call(_: int) -> tuple[int, int]:
        status, _body, pid = workers.request(
            "POST", "/v1/chat/completions", headers=auth,
            json_body={"model": "gateway-demo", "messages": MESSAGES})
        return status, pid

    with ThreadPoolExecutor(CALLS) as pool:
        results = list(pool.map(call, range(CALLS)))
    assert {pid for _, pid in results} == workers.pids  # both workers took calls
    assert Counter(status for status, _ in results) == {200: RPM, 429: CALLS - RPM}

    # Every worker reports the total, not its own share.
    deadline, answered = time.monotonic() + 20, set()
    while answered != workers.pids and time.monotonic() < deadline:
        status, body, pid = workers.request("GET", "/rate-limit", headers=auth)
        assert status == 200, body
        assert body["requests"]["used"] == RPM and body["requests"]["remaining"] == 0, body
        answered.add(pid)
    assert answered == workers.pids
    # Both workers' writers stored the admitted calls, and only those, on the one file.
    database = workers.data_dir / "gateway.db"
    deadline, stored = time.monotonic() + 20, 0
    while stored < RPM and time.monotonic() < deadline:
        with closing(sqlite3.connect(database, timeout=30)) as db:
            stored = db.execute("SELECT count(*) FROM inference_requests "
                                "WHERE status = 'completed'").fetchone()[0]
    assert stored == RPM
    log = workers.log.read_text()
    # The choice is stated once, at start, with its reason; no worker hit a locked database.
    assert log.count("rate limiter: sql (2 workers, no REDIS_URL)") == 1, log
    assert "Traceback" not in log and "database is locked" not in log, log


def test_login_attempts_per_ip_exact_across_workers(workers: Workers) -> None:
    def login(n: int) -> tuple[int, int]:
        status, _body, pid = workers.request(
            "POST", "/auth/login",
            json_body={"email": f"nobody-{n}@example.com", "password": "wrong password 1"})
        return status, pid

    with ThreadPoolExecutor(LOGINS) as pool:
        results = list(pool.map(login, range(LOGINS)))
    assert {pid for _, pid in results} == workers.pids
    assert Counter(status for status, _ in results) == {401: LOGINS_PER_IP,
                                                        429: LOGINS - LOGINS_PER_IP}


@pytest.mark.parametrize(("backend", "built", "warns"), [
    ("auto", SqlRateLimiter, False), ("memory", MemoryRateLimiter, True)])
def test_the_lifespan_builds_the_choice_for_its_worker_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str, built: type,
        warns: bool) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"
    upgrade(database)
    settings = make_settings(tmp_path, database, rate_limit_backend=backend, workers=2)
    with caplog.at_level(logging.INFO, logger="gateway"):
        server = GatewayServer(create_app(settings))
        try:
            assert isinstance(server.state.limiter, built)
        finally:
            server.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("each worker counts alone" in m for m in warnings) is warns, warnings
    name = "sql" if built is SqlRateLimiter else "memory"
    assert any(r.getMessage().startswith(f"rate limiter: {name} (") for r in caplog.records)
