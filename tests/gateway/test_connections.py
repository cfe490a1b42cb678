"""What clients can hold on a real ``gateway serve``: past GATEWAY_LIMIT_CONCURRENCY a new
request gets 503 at once while the open streams go on; an idle keep-alive connection is
closed after GATEWAY_KEEP_ALIVE_SECONDS."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.nginx import render_site
from tests.processes import GatewayProcess, gateway_env, set_plan

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 4
KEEP_ALIVE = 1.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    tmp: Path = tmp_path_factory.mktemp("connections")
    # Demo tokens 100 ms apart: a stream lasts a few seconds, long enough to hold.
    env = gateway_env(tmp / "data", GATEWAY_LIMIT_CONCURRENCY=str(LIMIT),
                      GATEWAY_KEEP_ALIVE_SECONDS=str(KEEP_ALIVE), GATEWAY_DEMO_DELAY_MS="100")
    proc = GatewayProcess(env, tmp / "gateway.log")
    try:
        proc.wait_ready()
        r = httpx.post(proc.url + "/auth/register",
                       json={"email": "conn@example.com", "password": "correct horse 42"})
        assert r.status_code == 201, r.text
        # The free plan allows two calls at a time; the test holds more.
        set_plan(env, "conn@example.com")
        yield proc, r.json()["apiKey"]
    finally:
        proc.stop()


def open_stream(proc: GatewayProcess, key: str) -> socket.socket:
    """A streamed demo call on its own connection, read up to its first event."""
    payload = json.dumps({"model": "gateway-demo", "stream": True,
                          "messages": [{"role": "user", "content": "hold on"}]}).encode()
    sock = socket.create_connection(("127.0.0.1", proc.port), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
                 b"Content-Type: application/json\r\n"
                 + f"Authorization: Bearer {key}\r\nContent-Length: {len(payload)}\r\n\r\n"
                 .encode() + payload)
    head = b""
    while b"data: " not in head:
        piece = sock.recv(65536)
        assert piece, head
        head += piece
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_over_the_limit_a_new_request_gets_503_and_held_streams_go_on(
        served: tuple[GatewayProcess, str]) -> None:
    proc, key = served
    # uvicorn counts the new request's own connection: LIMIT - 1 others fill it.
    held = [open_stream(proc, key) for _ in range(LIMIT - 1)]
    try:
        start = time.monotonic()
        r = httpx.get(proc.url + "/health", timeout=5)
        assert r.status_code == 503
        assert time.monotonic() - start < 1.0
        for sock in held:  # still streaming: more events arrive on each
            more = sock.recv(65536)
            assert b"data: " in more, more
    finally:
        for sock in held:
            sock.close()
    # Room again once they are gone.
    deadline = time.monotonic() + 5
    while httpx.get(proc.url + "/health", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, "the closed streams still count"
        time.sleep(0.05)


def test_idle_keep_alive_connection_is_closed_after_the_timeout(
        served: tuple[GatewayProcess, str]) -> None:
    proc, _ = served
    with socket.create_connection(("127.0.0.1", proc.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while not answer.endswith(b'{"status":"ok"}'):
            piece = sock.recv(65536)
            assert piece, answer
            answer += piece
        assert answer.startswith(b"HTTP/1.1 200") and b"connection: close" not in answer
        answered = time.monotonic()
        assert sock.recv(65536) == b""  # blocks until the gateway closes the connection
        idle = time.monotonic() - answered
    assert KEEP_ALIVE * 0.8 <= idle < KEEP_ALIVE + 1.5, idle


def test_deploy_nginx_conf_is_valid_and_times_out_slow_clients(tmp_path: Path) -> None:
    """deploy/nginx.conf as docker-compose mounts it (a conf.d file), checked by nginx."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        pytest.skip("nginx is not installed")
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    for directive in ("client_header_timeout 10s;", "client_body_timeout 30s;",
                      "keepalive_timeout 4s;", "proxy_buffering off;"):
        assert directive in site, directive
    # The compose service names do not resolve here, and port 80 needs root.
    site = render_site([1, 2, 3], listen=1)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{\n"
        f"  client_body_temp_path {tmp_path};\n  proxy_temp_path {tmp_path};\n"
        f"  include {tmp_path}/site.conf;\n}}\n")
    done = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                           "-c", str(tmp_path / "nginx.conf")], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr
