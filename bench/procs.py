"""Processes of a run: pinned start, readiness, CPU and RSS from /proc, clean stop."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
GATEWAY_CORE = 0
LOAD_CORE = 1


def raise_nofile(want: int = 65536) -> int:
    """Raise the open-files limit as far as the hard limit allows; return the new soft one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def cores() -> int:
    return len(os.sched_getaffinity(0))


def pin_self(core: int) -> None:
    """Pin this (load-generating) process to one core, when there is more than one."""
    if os.cpu_count() and os.cpu_count() > core:  # type: ignore[operator]
        os.sched_setaffinity(0, {core})


def taskset(core: int) -> list[str]:
    """The prefix that pins a command to ``core`` (nothing if taskset or the core is missing)."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core)]
    return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until something accepts on 127.0.0.1:port (fail early if ``proc`` exits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f}s")


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """utime + stime of one process (all its threads), in seconds; ``with_children`` adds
    the CPU of its exited, waited-for children (PostgreSQL backends)."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        fields = fh.read().rsplit(b")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat(5)
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def core_busy(core: int) -> float:
    """Seconds core ``core`` spent busy (anything but idle and iowait) since boot."""
    with open("/proc/stat", "rb") as fh:
        for line in fh:
            if line.startswith(b"cpu%d " % core):
                v = [int(x) for x in line.split()[1:]]
                return (sum(v[:8]) - v[3] - v[4]) / CLK_TCK
    return 0.0


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", "rb") as fh:
        return int(fh.read().split()[1]) * PAGE


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx workers)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


@dataclass
class Proc:
    """A started server: its pid(s) for CPU/RSS, and the Popen to stop it."""

    name: str
    popen: subprocess.Popen
    port: int
    log: Path
    include_children: bool = False

    @property
    def pids(self) -> list[int]:
        pids = [self.popen.pid]
        if self.include_children:
            pids += children(self.popen.pid)
        return pids

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            with contextlib.suppress(OSError, IndexError):
                total += cpu_seconds(pid)
        return total

    def rss(self) -> int:
        total = 0
        for pid in self.pids:
            with contextlib.suppress(OSError):
                total += rss_bytes(pid)
        return total

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def start(name: str, argv: Sequence[str], *, port: int, core: int, log_dir: Path,
          env: Mapping[str, str] | None = None, include_children: bool = False,
          timeout: float = 60.0) -> Proc:
    """Start ``argv`` pinned to ``core`` and wait until it listens on ``port``."""
    log = log_dir / f"{name}.log"
    fh = open(log, "ab")
    full_env = {**os.environ, **(env or {})}
    popen = subprocess.Popen([*taskset(core), *argv], stdout=fh, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=full_env, preexec_fn=raise_nofile)
    fh.close()
    proc = Proc(name, popen, port, log, include_children)
    try:
        wait_port(port, timeout, popen)
    except Exception:
        proc.stop()
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"{name} did not start; log tail:\n{tail}") from None
    return proc


class HasCpu(Protocol):
    def cpu(self) -> float: ...


class CpuMeter:
    """CPU seconds used by a set of processes between ``__enter__`` and ``__exit__``."""

    def __init__(self, *procs: HasCpu) -> None:
        self.procs = procs
        self.seconds = 0.0
        self.wall = 0.0

    def __enter__(self) -> CpuMeter:
        self._cpu0 = sum(p.cpu() for p in self.procs)
        self._core0 = core_busy(GATEWAY_CORE)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = sum(p.cpu() for p in self.procs) - self._cpu0
        self.wall = time.perf_counter() - self._t0
        self.core_busy = core_busy(GATEWAY_CORE) - self._core0

    @property
    def foreign(self) -> float:
        """Share of the gateway's core used by anything but these processes (noise)."""
        return max(0.0, (self.core_busy - self.seconds) / self.wall) if self.wall else 0.0

    @property
    def utilisation(self) -> float:
        """Cores used on average (1.0 = one core busy)."""
        return self.seconds / self.wall if self.wall else 0.0
