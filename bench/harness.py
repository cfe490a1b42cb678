"""The run context: modes, targets (mock direct, nginx, gateway) and measuring helpers."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bench import load, wrk
from bench.client import build_get, build_request, fetch
from bench.procs import CpuMeter, HasCpu, Proc
from bench.services import NONSTREAM, PACED


@dataclass(frozen=True)
class Mode:
    """Durations and sizes of one kind of run."""

    name: str
    wrk_seconds: float
    conns: tuple[int, ...]
    fixed_seconds: float
    fixed_fractions: tuple[float, ...]  # of measured capacity, tried in order
    chunks: tuple[int, ...]
    stream_seconds: float  # one stream at a time, per target and chunk count
    sat_seconds: float
    sat_streams: int
    open_counts: tuple[int, ...]
    hold_seconds: float
    soak_seconds: float
    soak_fraction: float  # of measured capacity, non-streaming, plus token-paced streams
    soak_streams: int
    backend_conns: tuple[int, ...]
    warmup_seconds: float
    open_budget_seconds: float = 120.0  # opening all the streams of one step, at most
    restarts: bool = True  # a fresh gateway per scenario (smoke: no, to stay fast)


MODES = {
    "smoke": Mode("smoke", 1, (16,), 0.5, (0.5,), (20,), 0.5, 0.5, 16, (50,), 0.3, 2, 0.2, 2,
                  (16,), 0.3, 20, restarts=False),
    "quick": Mode("quick", 5, (16, 64, 256), 5, (0.5, 0.7, 0.85, 1.0, 0.35, 0.2), (20, 64),
                  3, 5, 64, (1000, 5000), 5, 60, 0.4, 16, (64,), 3),
    "full": Mode("full", 15, (16, 64, 256), 10, (0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 0.35, 0.2),
                 (20, 64), 10, 15, 64, (1000, 5000), 10, 600, 0.4, 32, (16, 64, 256), 5),
}

PROMPT = [{"role": "user", "content": "Say hello to the benchmark, briefly please."}]


def openai_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "max_tokens": 64, "stream": stream}


def anthropic_body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "max_tokens": 64, "stream": stream}


@dataclass
class Target:
    """Something that answers chat completions: the mock itself, nginx, or a gateway."""

    name: str  # "direct" | "nginx" | "bare" | "gateway"
    proc: Proc
    headers: dict[str, str] = field(default_factory=dict)
    is_gateway: bool = False
    extra_cpu: HasCpu | None = None  # PostgreSQL + Redis, measured apart

    @property
    def port(self) -> int:
        return self.proc.port

    def request(self, body: dict[str, Any], path: str = "/v1/chat/completions") -> bytes:
        return build_request(path, body, port=self.port, headers=self.headers)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Run:
    """Everything a scenario needs, and the results it adds."""

    mode: Mode
    work: Path
    mock: Target
    gateway: Target
    nginx: Target | None
    use_wrk: bool
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    restart: Callable[[], Proc] | None = None  # a fresh gateway process (same data)
    bare: Target | None = None  # the bare relay (bench/bare_relay.py): issue 17's reference

    async def fresh(self) -> None:
        """Start each scenario from a fresh, warmed-up gateway: state left by the previous
        one (e.g. hundreds of pooled upstream connections) would otherwise leak into it."""
        if self.restart is not None and self.mode.restarts:
            await asyncio.to_thread(self.gateway.proc.stop)
            self.gateway.proc = await asyncio.to_thread(self.restart)
        await self.warmup()

    async def warmup(self) -> None:
        gw = self.gateway
        await load.closed_loop("127.0.0.1", gw.port, gw.request(openai_body(NONSTREAM, False)),
                               conns=16, duration=self.mode.warmup_seconds)
        await load.closed_loop("127.0.0.1", gw.port, gw.request(openai_body(PACED[20], True)),
                               conns=8, duration=min(1.0, self.mode.warmup_seconds), stream=True)
        await self.drain_writer(gw)

    @property
    def targets(self) -> list[Target]:
        """Direct first (the baseline), then nginx and the bare relay, then the gateway."""
        return [t for t in (self.mock, self.nginx, self.bare, self.gateway) if t is not None]

    async def ready(self, target: Target) -> dict[str, Any]:
        """The gateway's ``/ready`` JSON (writer pending/dropped/written)."""
        res = await fetch("127.0.0.1", target.port, build_get("/ready", port=target.port))
        return orjson.loads(res.body or b"{}")

    async def drain_writer(self, target: Target, wait_s: float = 30.0) -> dict[str, Any]:
        """Wait until the gateway's writer queue is empty (so scenarios do not overlap)."""
        deadline = time.monotonic() + wait_s
        state = await self.ready(target)
        while state.get("writer", {}).get("pending", 0) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            state = await self.ready(target)
        return state

    async def measured(self, target: Target, work: Callable[[], Awaitable[dict[str, Any]]],
                       ) -> dict[str, Any]:
        """Run ``work`` and add the target's CPU per request/event, RSS and writer deltas."""
        before = await self.ready(target) if target.is_gateway else None
        extra = CpuMeter(target.extra_cpu) if target.extra_cpu else None
        with CpuMeter(target.proc) as cpu:
            if extra is not None:
                extra.__enter__()
            out = await work()
            if extra is not None:
                extra.__exit__()
        out["cpu_s"] = round(cpu.seconds, 3)
        out["cpu_cores"] = round(cpu.utilisation, 3)
        out["core0_other_load"] = round(cpu.foreign, 3)  # other processes on the gateway core
        if out.get("ok"):
            out["cpu_us_per_req"] = round(cpu.seconds * 1e6 / out["ok"], 1)
        if out.get("events"):
            out["cpu_us_per_event"] = round(cpu.seconds * 1e6 / out["events"], 2)
        if extra is not None and out.get("ok"):
            out["db_redis_cpu_us_per_req"] = round(extra.seconds * 1e6 / out["ok"], 1)
        out["rss_mb"] = round(target.proc.rss() / 2**20, 1)
        if before is not None:
            after = await self.drain_writer(target)
            w0, w1 = before.get("writer", {}), after.get("writer", {})
            out["writer"] = {"written": w1.get("written", 0) - w0.get("written", 0),
                             "dropped": w1.get("dropped", 0) - w0.get("dropped", 0),
                             "pending_after": w1.get("pending", 0)}
        return out

    async def closed(self, target: Target, body: dict[str, Any], conns: int, seconds: float,
                     path: str = "/v1/chat/completions") -> dict[str, Any]:
        """Non-streaming closed loop: wrk when present, else the Python client."""
        if self.use_wrk:
            return await asyncio.to_thread(wrk.run, target.port, path, body, target.headers,
                                           conns=conns, duration=seconds)
        tally = await load.closed_loop("127.0.0.1", target.port, target.request(body, path),
                                       conns=conns, duration=seconds)
        return {"tool": "python", "conns": conns, **tally.summary()}


def added(gateway: float | None, direct: float | None) -> float | None:
    """What the proxy adds on top of calling the mock directly."""
    if gateway is None or direct is None:
        return None
    return round(gateway - direct, 3)
