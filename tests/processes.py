"""Real ``gateway serve`` processes for multi-instance tests, and a private redis-server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from tests.conftest import SECRET, skip_or_fail


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gateway_env(data_dir: Path, **env: str) -> dict[str, str]:
    """The environment of a gateway process: fixed secrets, fast bcrypt, no stray config.

    ``env`` adds or overrides variables by their names (``DATABASE_URL``, ``GATEWAY_…``).
    """
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GATEWAY_", "OPENAI", "ANTHROPIC", "TOGETHER"))
            and k not in ("DATABASE_URL", "REDIS_URL")}
    base.update({"GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_JWT_SECRET": SECRET,
                 "GATEWAY_KEY_HASH_SECRET": SECRET + "k", "GATEWAY_BCRYPT_ROUNDS": "4",
                 "GATEWAY_DEMO_DELAY_MS": "0", "GATEWAY_AUTH_CACHE_SECONDS": "0",
                 "GATEWAY_WRITER_FLUSH_SECONDS": "0.02",
                 # Redis keeps the per-address count across runs; tests register from 127.0.0.1.
                 "GATEWAY_REGISTRATIONS_PER_IP": "1000000"})
    base.update(env)
    return base


def set_plan(env: dict[str, str], email: str, plan: str = "enterprise") -> None:
    """Move a user to ``plan`` with the real ``gateway set-plan`` command (a test that holds
    many calls at once needs more than the free plan's limits)."""
    done = subprocess.run([sys.executable, "-m", "gateway.cli", "set-plan", email, plan],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


class GatewayProcess:
    """``python -m gateway.cli serve`` on a loopback port (a free one unless given: a
    restarted replica keeps its port behind a load balancer); ``wait_ready`` before use."""

    def __init__(self, env: dict[str, str], log: Path, *, args: Sequence[str] = (),
                 umask: int = -1, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(self.port),
             "--log-level", "warning", *args],
            env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
            umask=umask)

    def wait_ready(self, timeout: float = 60.0) -> GatewayProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gateway exited: {self._log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("gateway did not become healthy")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as when a machine dies."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


def child_pids(pid: int) -> set[int]:
    """The live children of ``pid`` (uvicorn's workers, for a ``--workers N`` gateway)."""
    children = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            children.add(int(entry.name))
    return children


def accepting_pid(sock: socket.socket, pids: set[int], timeout: float = 10.0) -> int:
    """Which of ``pids`` accepted the connected client socket ``sock``.

    A worker takes a connection off the shared listening socket before any request is
    sent on it: look the connection up then, while nothing can close it yet.
    """
    client_port = sock.getsockname()[1]
    server_port = sock.getpeername()[1]
    deadline = time.monotonic() + timeout
    while True:
        inode = _server_socket_inode(server_port, client_port)
        if inode is not None:
            for pid in pids:
                if _holds_socket(pid, inode):
                    return pid
        if time.monotonic() > deadline:
            raise LookupError(f"none of {sorted(pids)} accepted port {client_port}")
        time.sleep(0.01)


def _server_socket_inode(server_port: int, client_port: int) -> str | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if (state == "01" and int(local.split(":")[1], 16) == server_port  # ESTABLISHED
                and int(remote.split(":")[1], 16) == client_port):
            return fields[9]
    return None


def _holds_socket(pid: int, inode: str) -> bool:
    target = f"socket:[{inode}]"
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(fd) == target:
                return True
        except OSError:
            continue
    return False


class RedisProcess:
    """A private redis-server on a free port, to stop and start at will."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            skip_or_fail("redis-server is not installed")
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
