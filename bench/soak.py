"""Scenario 5: a bounded soak — steady mixed load, RSS and the writer queue sampled over time."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import load
from bench.harness import Run, log, openai_body
from bench.load import Tally, ms, percentile
from bench.mock_upstream import shape_of
from bench.procs import CpuMeter
from bench.scenarios_http import capacity
from bench.services import NONSTREAM, SOAK_STREAM

DEFAULT_RATE = 500.0  # when no throughput was measured in this run


def _slope_mb_per_min(samples: list[dict[str, Any]]) -> float | None:
    """Least-squares slope of RSS over time (MB per minute)."""
    if len(samples) < 3:
        return None
    xs = [s["t"] / 60.0 for s in samples]
    ys = [s["rss_mb"] for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if not var:
        return None
    return round(sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var, 3)


async def soak(run: Run, seconds: float) -> None:
    """Fixed-rate non-streaming load plus looping streams for ``seconds``; RSS should level
    off after warm-up and the writer must never drop."""
    gw = run.gateway
    rate = round((capacity(run) or DEFAULT_RATE / run.mode.soak_fraction)
                 * run.mode.soak_fraction, 1)
    interval = max(0.5, min(10.0, seconds / 30))
    plain, streams = Tally(), Tally()
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    start_ready = await run.ready(gw)

    async def sampler() -> None:
        t0 = time.perf_counter()
        seen = 0
        cpu0 = gw.proc.cpu()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
            except TimeoutError:
                pass
            window = sorted(plain.latencies[seen:])
            seen = len(plain.latencies)
            cpu1 = gw.proc.cpu()
            ready = await run.ready(gw)
            writer = ready.get("writer", {})
            samples.append({
                "t": round(time.perf_counter() - t0, 1), "rss_mb": round(gw.proc.rss() / 2**20, 1),
                "cpu_cores": round((cpu1 - cpu0) / interval, 3), "p99_ms": ms(
                    percentile(window, 99)), "writer_pending": writer.get("pending"),
                "writer_dropped": writer.get("dropped"), "writer_written": writer.get("written")})
            cpu0 = cpu1

    shape = shape_of(SOAK_STREAM)
    log(f"soak: {seconds:.0f}s at {rate:.0f} req/s non-streaming + {run.mode.soak_streams} "
        f"looping streams ({shape.chunks} chunks, {shape.delay * 1000:.0f} ms apart)")
    with CpuMeter(gw.proc) as cpu:
        sampling = asyncio.create_task(sampler())
        await asyncio.gather(
            load.fixed_rate("127.0.0.1", gw.port, gw.request(openai_body(NONSTREAM, False)),
                            rate=rate, duration=seconds, tally=plain),
            load.closed_loop("127.0.0.1", gw.port, gw.request(openai_body(SOAK_STREAM, True)),
                             conns=run.mode.soak_streams, duration=seconds, stream=True,
                             tally=streams))
        stop.set()
        await sampling
    end_ready = await run.drain_writer(gw)
    settled = samples[len(samples) // 3:]  # after warm-up
    first = settled[0]["rss_mb"] if settled else None
    last = samples[-1]["rss_mb"] if samples else None
    growth = round(last - first, 1) if first is not None and last is not None else None
    dropped = end_ready["writer"]["dropped"] - start_ready["writer"]["dropped"]
    out = {
        "seconds": seconds, "rate": rate, "streams": run.mode.soak_streams,
        "plain": plain.summary() | {"duration_s": round(seconds, 1)},
        "stream": streams.summary(), "cpu_cores": round(cpu.utilisation, 3),
        "rss_start_mb": samples[0]["rss_mb"] if samples else None,
        "rss_after_warmup_mb": first, "rss_end_mb": last,
        "rss_max_mb": max((s["rss_mb"] for s in samples), default=None),
        "rss_growth_after_warmup_mb": growth,
        "rss_growth_after_warmup_pct": round(100 * growth / first, 1) if growth is not None
        and first else None,
        "rss_slope_after_warmup_mb_per_min": _slope_mb_per_min(settled),
        "writer_dropped": dropped, "writer_pending_max": max(
            (s["writer_pending"] or 0 for s in samples), default=0),
        "writer_written": end_ready["writer"]["written"] - start_ready["writer"]["written"],
        "samples": samples,
    }
    plain_rate = out["plain"]["ok"] / seconds if seconds else 0
    out["plain"]["rps"] = round(plain_rate, 1)
    run.results["soak"] = out
    log(f"soak: RSS {out['rss_start_mb']} → {first} (after warm-up) → {last} MB, growth "
        f"{growth} MB; writer dropped {dropped}, max pending {out['writer_pending_max']}; "
        f"p99 {out['plain']['p99_ms']} ms; errors {out['plain']['errors']}+"
        f"{out['stream']['errors']}")
