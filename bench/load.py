"""Load shapes on the raw client: closed loop, open loop at a fixed rate, many open streams.

Latencies of the fixed-rate generator are taken from each request's *scheduled* start, so
a stalled server (or a stalled client) shows up in the percentiles instead of hiding.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.client import HttpConnection, Result, now


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already *sorted* values (None when empty)."""
    if not values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(values)))
    return values[min(rank, len(values)) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


@dataclass
class Tally:
    """What a load run saw; ``summary()`` turns it into the JSON the report uses."""

    duration: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)
    events: int = 0
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)

    def add(self, res: Result, *, stream: bool) -> None:
        if res.error is not None:
            self.errors[res.error.split(":")[0]] += 1
            return
        self.statuses[res.status] += 1
        if res.status != 200 or (stream and not res.done):
            self.errors["bad response" if res.status == 200 else f"http {res.status}"] += 1
            return
        self.latencies.append(res.latency)
        self.events += res.events
        if res.ttft is not None:
            self.ttfts.append(res.ttft)
        self.gaps.extend(res.gaps)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    def summary(self) -> dict[str, Any]:
        lat, ttft, gaps = sorted(self.latencies), sorted(self.ttfts), sorted(self.gaps)
        out: dict[str, Any] = {
            "duration_s": round(self.duration, 3), "ok": self.ok,
            "errors": sum(self.errors.values()), "error_kinds": dict(self.errors),
            "rps": round(self.ok / self.duration, 1) if self.duration else None,
            "p50_ms": ms(percentile(lat, 50)), "p90_ms": ms(percentile(lat, 90)),
            "p99_ms": ms(percentile(lat, 99)), "max_ms": ms(lat[-1] if lat else None),
        }
        if self.events:
            out.update(events=self.events,
                       events_per_s=round(self.events / self.duration, 1),
                       ttft_p50_ms=ms(percentile(ttft, 50)), ttft_p99_ms=ms(percentile(ttft, 99)))
        if gaps:
            out.update(gap_mean_ms=ms(sum(gaps) / len(gaps)), gap_p50_ms=ms(percentile(gaps, 50)),
                       gap_p99_ms=ms(percentile(gaps, 99)))
        return out


async def _connect(host: str, port: int) -> HttpConnection:
    return await HttpConnection.open(host, port)


async def closed_loop(host: str, port: int, request: bytes, *, conns: int, duration: float,
                      stream: bool = False, track_gaps: bool = False,
                      wait_s: float = 30.0, tally: Tally | None = None) -> Tally:
    """``conns`` connections, each sending the next request as soon as the last ends."""
    tally = Tally() if tally is None else tally
    deadline = now() + duration

    async def worker() -> None:
        conn: HttpConnection | None = None
        while now() < deadline:
            if conn is None or not conn.usable:
                try:
                    conn = await _connect(host, port)
                except OSError as exc:
                    tally.errors[f"connect {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.05)
                    continue
            try:
                res = await asyncio.wait_for(conn.send(request, track_gaps=track_gaps), wait_s)
            except TimeoutError:
                tally.errors["timeout"] += 1
                conn.abort()
                conn = None
                continue
            tally.add(res, stream=stream)
        if conn is not None:
            conn.close()

    t0 = now()
    await asyncio.gather(*(worker() for _ in range(conns)))
    tally.duration = now() - t0
    return tally


async def fixed_rate(host: str, port: int, request: bytes, *, rate: float, duration: float,
                     max_conns: int = 256, stream: bool = False,
                     wait_s: float = 10.0, tally: Tally | None = None) -> Tally:
    """Open loop: request *i* is due at ``t0 + i / rate`` whatever happened before it."""
    tally = Tally() if tally is None else tally
    idle: list[HttpConnection] = []
    opened = 0
    slots = asyncio.Semaphore(max_conns)
    tasks: set[asyncio.Task[None]] = set()

    async def one(due: float) -> None:
        nonlocal opened
        async with slots:
            conn = None
            while idle and conn is None:
                candidate = idle.pop()
                conn = candidate if candidate.usable else None
            if conn is None:
                try:
                    conn = await _connect(host, port)
                    opened += 1
                except OSError as exc:
                    tally.errors[f"connect {type(exc).__name__}"] += 1
                    return
            try:
                res = await asyncio.wait_for(conn.send(request, start=due), wait_s)
            except TimeoutError:
                tally.errors["timeout"] += 1
                conn.abort()
                return
            tally.add(res, stream=stream)
            if conn.usable:
                idle.append(conn)

    total = int(rate * duration)
    t0 = now() + 0.01
    for i in range(total):
        due = t0 + i / rate
        delay = due - now()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.wait(tasks)
    tally.duration = now() - t0
    for conn in idle:
        conn.close()
    return tally


@dataclass
class OpenStreams:
    """Streams held open; ``close()`` ends them all (the gateway must cancel upstream)."""

    conns: list[HttpConnection]
    futures: list[asyncio.Future[Result]]
    failed: Counter

    @property
    def started(self) -> int:
        return sum(1 for c in self.conns if c._res is not None and c._res.first is not None)

    async def close(self) -> None:
        for conn in self.conns:
            conn.abort()
        for fut in self.futures:
            fut.cancel()
        await asyncio.sleep(0)


async def open_streams(host: str, port: int, request: bytes, count: int, *,
                       batch: int = 100, wait_s: float = 120.0) -> OpenStreams:
    """Open ``count`` streams, ``batch`` at a time, each batch once the last one got its
    first events; stop opening when ``wait_s`` is spent (the rest count as failed)."""
    held = OpenStreams([], [], Counter())
    deadline = time.monotonic() + wait_s

    async def start_one() -> None:
        try:
            conn = await _connect(host, port)
        except OSError as exc:
            held.failed[f"connect {type(exc).__name__}"] += 1
            return
        held.conns.append(conn)
        held.futures.append(conn.send(request))

    def settled() -> bool:
        return held.started + sum(f.done() for f in held.futures) >= len(held.conns)

    for i in range(0, count, batch):
        if time.monotonic() > deadline:
            held.failed["not opened: time budget spent"] += count - i
            break
        await asyncio.gather(*(start_one() for _ in range(min(batch, count - i))))
        while time.monotonic() < deadline:
            if settled():
                break
            await asyncio.sleep(0.05)
    if not settled():
        held.failed["no first event in time"] += (len(held.conns) - held.started
                                                  - sum(f.done() for f in held.futures))
    for conn, fut in zip(held.conns, held.futures, strict=True):
        if fut.done() and not fut.cancelled():
            res = fut.result()
            held.failed[res.error or f"ended early (http {res.status})"] += 1
            conn.abort()
    return held


async def wait_closed(conns: Sequence[HttpConnection], wait_s: float = 5.0) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.closed for c in conns)), wait_s)
