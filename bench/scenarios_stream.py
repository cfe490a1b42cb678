"""Streaming scenarios: added TTFT and inter-chunk gap, events/s at saturation, open streams."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bench import load
from bench.client import build_get, fetch
from bench.harness import Run, Target, added, anthropic_body, log, openai_body
from bench.procs import CpuMeter
from bench.services import ANTHROPIC_PREFIX, PACED, SLOW


async def _streams(run: Run, target: Target, body: dict[str, Any], conns: int, seconds: float,
                   path: str = "/v1/chat/completions") -> dict[str, Any]:
    async def work() -> dict[str, Any]:
        tally = await load.closed_loop("127.0.0.1", target.port, target.request(body, path),
                                       conns=conns, duration=seconds, stream=True,
                                       track_gaps=conns == 1)
        return {"conns": conns, **tally.summary()}
    return await run.measured(target, work)


async def streaming(run: Run) -> None:
    """Scenario 3: per chunk count, one stream at a time (added TTFT and gap), then many
    concurrent streams (events/s and CPU per event). The upstream paces its chunks 1 ms
    apart, so each one is a separate write, as a real model's tokens are."""
    out: dict[str, Any] = {}
    for chunks in run.mode.chunks:
        await run.fresh()
        body = openai_body(PACED[chunks], True)
        latency = {t.name: await _streams(run, t, body, 1, run.mode.stream_seconds)
                   for t in run.targets}
        for name in ("nginx", "bare", "gateway"):
            if name in latency:
                for key in ("ttft_p50_ms", "ttft_p99_ms", "gap_p50_ms", "gap_p99_ms",
                            "gap_mean_ms"):
                    latency[name][f"added_{key}"] = added(latency[name].get(key),
                                                          latency["direct"].get(key))
        sat = {t.name: await _streams(run, t, body, run.mode.sat_streams, run.mode.sat_seconds)
               for t in run.targets}
        out[str(chunks)] = {"latency": latency, "saturation": sat}
        gw, gs = latency["gateway"], sat["gateway"]
        log(f"{chunks} chunks: gateway adds TTFT p50 {gw.get('added_ttft_p50_ms')} ms, gap p50 "
            f"{gw.get('added_gap_p50_ms')} ms; saturation {gs.get('events_per_s')} events/s, "
            f"{gs.get('cpu_us_per_event')} µs CPU/event "
            f"(direct {sat['direct'].get('events_per_s')} events/s)")
    run.results["streaming"] = out


async def anthropic_stream(run: Run) -> None:
    """Streaming through the translating route (Anthropic Messages upstream)."""
    chunks = max(run.mode.chunks)
    model = PACED[chunks]
    direct = await _streams(run, run.mock, anthropic_body(model, True), run.mode.sat_streams,
                            run.mode.sat_seconds, path="/v1/messages")
    gw = await _streams(run, run.gateway, openai_body(ANTHROPIC_PREFIX + model, True),
                        run.mode.sat_streams, run.mode.sat_seconds)
    run.results.setdefault("anthropic", {})["stream"] = {"chunks": chunks, "direct": direct,
                                                         "gateway": gw}
    log(f"anthropic route, {chunks} chunks: {gw.get('events_per_s')} events/s, "
        f"{gw.get('cpu_us_per_event')} µs CPU/event")


async def _mock_open_streams(run: Run) -> int:
    res = await fetch("127.0.0.1", run.mock.port, build_get("/stats", port=run.mock.port))
    return int(orjson.loads(res.body or b"{}").get("streams_open", -1))


async def _wait_upstream_closed(run: Run, wait_s: float = 15.0) -> tuple[int, float]:
    """Wait until the mock has no open stream; return (left open, seconds waited)."""
    t0 = time.monotonic()
    left = await _mock_open_streams(run)
    while left > 0 and time.monotonic() - t0 < wait_s:
        await asyncio.sleep(0.2)
        left = await _mock_open_streams(run)
    return left, round(time.monotonic() - t0, 2)


async def _hold(run: Run, target: Target) -> dict[str, Any]:
    body = openai_body(SLOW, True)
    request = target.request(body)
    idle = target.proc.rss()
    out: dict[str, Any] = {"idle_rss_mb": round(idle / 2**20, 1), "points": []}
    held: list[load.OpenStreams] = []
    opened = 0
    for count in run.mode.open_counts:
        t0 = time.perf_counter()
        batch = await load.open_streams("127.0.0.1", target.port, request, count - opened,
                                        wait_s=run.mode.open_budget_seconds)
        held.append(batch)
        opened = count
        open_s = time.perf_counter() - t0
        with CpuMeter(target.proc) as meter:
            await asyncio.sleep(run.mode.hold_seconds)
        rss = target.proc.rss()
        failed = sum(sum(b.failed.values()) for b in held)
        started = sum(b.started for b in held)
        point = {"streams": count, "started": started, "failed": failed,
                 "open_seconds": round(open_s, 2), "rss_mb": round(rss / 2**20, 1),
                 "kb_per_stream": round((rss - idle) / 1024 / max(started, 1), 1),
                 "cpu_cores_holding": round(meter.utilisation, 3)}
        out["points"].append(point)
        log(f"{target.name}: {started}/{count} streams open, RSS {point['rss_mb']} MB "
            f"({point['kb_per_stream']} kB/stream), {point['cpu_cores_holding']} cores busy "
            f"relaying 1 event/s each")
    for batch in held:
        await batch.close()
    out["upstream_left_open"], out["upstream_close_seconds"] = await _wait_upstream_closed(run)
    await asyncio.sleep(min(1.0, run.mode.hold_seconds))
    out["rss_after_close_mb"] = round(target.proc.rss() / 2**20, 1)
    return out


async def open_streams(run: Run) -> None:
    """Scenario 4: many open streams on a slow upstream (one chunk a second): RSS per stream,
    and whether closing the clients closes the upstream streams too."""
    out: dict[str, Any] = {}
    await run.fresh()
    for target in (run.gateway, run.nginx):
        if target is not None:
            out[target.name] = await _hold(run, target)
    if run.gateway.is_gateway:
        await run.drain_writer(run.gateway)
    run.results["open_streams"] = out
