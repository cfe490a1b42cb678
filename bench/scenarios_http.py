"""Non-streaming scenarios: mock self-check, one request at a time, throughput, fixed rate."""

from __future__ import annotations

from typing import Any

import orjson

from bench import load
from bench.client import fetch
from bench.harness import Run, Target, added, anthropic_body, log, openai_body
from bench.services import ANTHROPIC_PREFIX, BALANCED, DEAD_PRIMARY, NONSTREAM

LATENCY_BUDGET_MS = 5.0


def body_for(target: Target) -> dict[str, Any]:
    """The non-streaming request: ``stream: false`` everywhere (the gateway still calls
    upstream with ``stream: true`` and collects; the mock and nginx answer one JSON body)."""
    return openai_body(NONSTREAM, False)


async def check_responses(run: Run) -> dict[str, Any]:
    """One plain and one streamed call through the gateway, checked for shape."""
    gw = run.gateway
    plain = await fetch("127.0.0.1", gw.port, gw.request(openai_body(NONSTREAM, False)))
    streamed = await fetch("127.0.0.1", gw.port, gw.request(openai_body(NONSTREAM, True)))
    body = orjson.loads(plain.body or b"{}") if plain.status == 200 else {}
    text = (body.get("choices") or [{}])[0].get("message", {}).get("content")
    out = {"plain_status": plain.status, "plain_content": text,
           "stream_status": streamed.status, "stream_events": streamed.events,
           "stream_done": streamed.done}
    if plain.status != 200 or not text or streamed.status != 200 or not streamed.done:
        raise RuntimeError(f"the gateway does not answer as expected: {out}; "
                           f"body={(plain.body or b'')[:300]!r}")
    return out


async def mock_selfcheck(run: Run) -> None:
    """The mock alone must be far faster than the gateway, or it would be the bottleneck."""
    conns = max(run.mode.conns)
    res = await run.measured(run.mock, lambda: run.closed(
        run.mock, body_for(run.mock), conns, run.mode.wrk_seconds))
    run.results["mock_selfcheck"] = res
    log(f"mock alone: {res['rps']:.0f} req/s at {conns} conns, "
        f"{res.get('cpu_us_per_req', 0):.0f} µs CPU/req (shares its core with the load tool)")


async def sequential(run: Run) -> None:
    """Scenario 1: one request at a time; what the hop adds to p50 / p99."""
    await run.fresh()
    out: dict[str, Any] = {}
    for target in run.targets:
        out[target.name] = await run.measured(target, lambda t=target: run.closed(
            t, body_for(t), 1, run.mode.wrk_seconds))
    for name in ("nginx", "bare", "gateway"):
        if name in out:
            for p in ("p50_ms", "p99_ms"):
                out[name][f"added_{p}"] = added(out[name].get(p), out["direct"].get(p))
    run.results["sequential"] = out
    gw = out["gateway"]
    log(f"one at a time: gateway adds p50 {gw['added_p50_ms']} ms, p99 {gw['added_p99_ms']} ms")


async def throughput(run: Run) -> None:
    """Scenario 2: closed-loop throughput at each connection count (fresh gateway each).

    Then, without a restart, one request at a time again: what the state left by the
    largest step (idle pooled upstream connections, caches) costs the next caller.
    """
    out: dict[str, Any] = {}
    for conns in run.mode.conns:
        await run.fresh()
        row: dict[str, Any] = {}
        for target in run.targets:
            row[target.name] = await run.measured(target, lambda t=target, c=conns: run.closed(
                t, body_for(t), c, run.mode.wrk_seconds))
        out[str(conns)] = row
        gw = row["gateway"]
        log(f"{conns} conns: gateway {gw['rps']:.0f} req/s p50 {gw['p50_ms']} p99 {gw['p99_ms']} "
            f"ms, {gw.get('cpu_us_per_req')} µs CPU/req, writer {gw.get('writer')}; "
            f"direct {row['direct']['rps']:.0f} req/s")
    run.results["throughput"] = out
    if len(run.mode.conns) < 2:
        return
    after = await run.measured(run.gateway, lambda: run.closed(
        run.gateway, body_for(run.gateway), 1, run.mode.wrk_seconds))
    before = run.results.get("sequential", {}).get("gateway", {})
    run.results["after_burst"] = {"after_conns": max(run.mode.conns), "gateway": after,
                                  "fresh_p50_ms": before.get("p50_ms"),
                                  "fresh_cpu_us_per_req": before.get("cpu_us_per_req")}
    log(f"one at a time right after {max(run.mode.conns)} conns: p50 {after['p50_ms']} ms, "
        f"{after.get('cpu_us_per_req')} µs CPU/req (fresh: {before.get('p50_ms')} ms, "
        f"{before.get('cpu_us_per_req')} µs)")


def capacity(run: Run) -> float:
    rows = run.results.get("throughput", {})
    return max((r["gateway"]["rps"] or 0 for r in rows.values()), default=0.0)


async def _fixed(run: Run, target: Target, rate: float) -> dict[str, Any]:
    async def work() -> dict[str, Any]:
        tally = await load.fixed_rate("127.0.0.1", target.port, target.request(body_for(target)),
                                      rate=rate, duration=run.mode.fixed_seconds)
        return {"rate": round(rate, 1), **tally.summary()}
    return await run.measured(target, work)


def _holds(res: dict[str, Any], rate: float) -> bool:
    return (res["p99_ms"] is not None and res["p99_ms"] <= LATENCY_BUDGET_MS
            and res["errors"] == 0 and res["ok"] >= 0.97 * rate * res["duration_s"])


async def fixed_rate(run: Run) -> None:
    """Scenario 2b: open-loop fixed rate; the highest tried rate whose p99 ≤ 5 ms.

    50% of the measured capacity first; then upwards while p99 holds, or downwards until
    it holds when 50% already missed.
    """
    cap = capacity(run)
    if not cap:
        return
    await run.fresh()
    points: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None

    async def attempt(fraction: float) -> bool:
        nonlocal best
        res = await _fixed(run, run.gateway, cap * fraction)
        res["fraction"] = fraction
        points.append(res)
        holds = _holds(res, cap * fraction)
        log(f"fixed rate {res['rate']:.0f}/s ({fraction:.0%} of capacity): p50 {res['p50_ms']} "
            f"p99 {res['p99_ms']} ms, {res['errors']} errors → {'holds' if holds else 'misses'}")
        if holds and (best is None or res["rate"] > best["rate"]):
            best = res
        return holds

    fractions = run.mode.fixed_fractions
    if await attempt(0.5):
        for fraction in sorted(f for f in fractions if f > 0.5):
            if not await attempt(fraction):
                break
    else:
        for fraction in sorted((f for f in fractions if f < 0.5), reverse=True):
            if await attempt(fraction):
                break
    half = next((p for p in points if p["fraction"] == 0.5), None)
    direct = await _fixed(run, run.mock, cap * 0.5)
    run.results["fixed_rate"] = {
        "capacity_rps": cap, "budget_p99_ms": LATENCY_BUDGET_MS, "points": points,
        "best_rate": best["rate"] if best else None,
        "best_fraction": best["fraction"] if best else None,
        "at_50pct": half, "direct_at_50pct": direct,
        "added_p99_ms_at_50pct": added(half["p99_ms"] if half else None, direct["p99_ms"]),
    }


async def anthropic_route(run: Run) -> None:
    """The translating route: OpenAI in, Anthropic Messages upstream, non-streaming."""
    await run.fresh()
    conns = 64 if 64 in run.mode.conns else run.mode.conns[0]
    direct = await run.measured(run.mock, lambda: run.closed(
        run.mock, anthropic_body(NONSTREAM, False), conns, run.mode.wrk_seconds,
        path="/v1/messages"))
    gw = await run.measured(run.gateway, lambda: run.closed(
        run.gateway, openai_body(ANTHROPIC_PREFIX + NONSTREAM, False), conns,
        run.mode.wrk_seconds))
    run.results.setdefault("anthropic", {})["nonstream"] = {"conns": conns, "direct": direct,
                                                            "gateway": gw}
    log(f"anthropic route, {conns} conns: gateway {gw['rps']:.0f} req/s, "
        f"{gw.get('cpu_us_per_req')} µs CPU/req")


async def resilience(run: Run) -> None:
    """The routing layer on the happy path: the plain route against the same mock model
    balanced over two deployments with a fallback, and behind a dead primary whose breaker
    is open (every call skips it for the fallback). Interleaved, twice, in one process:
    the differences are what routing costs, next to the noise between the two rounds."""
    await run.fresh()
    gw = run.gateway
    # Open the dead primary's breaker: its first call is refused and falls back.
    await fetch("127.0.0.1", gw.port, gw.request(openai_body(DEAD_PRIMARY, False)))
    routes = {"plain": NONSTREAM, "balanced": BALANCED, "dead_primary": DEAD_PRIMARY}
    conns = 16 if 16 in run.mode.conns else run.mode.conns[0]
    out: dict[str, Any] = {name: {"sequential": [], "throughput": []} for name in routes}
    for _ in range(2):
        for name, model in routes.items():
            body = openai_body(model, False)
            one = await run.measured(gw, lambda b=body: run.closed(gw, b, 1,
                                                                   run.mode.wrk_seconds))
            many = await run.measured(gw, lambda b=body: run.closed(gw, b, conns,
                                                                    run.mode.wrk_seconds))
            out[name]["sequential"].append(one)
            out[name]["throughput"].append(many)
    summary: dict[str, Any] = {"conns": conns}
    for name in routes:
        seq, thr = out[name]["sequential"], out[name]["throughput"]
        summary[name] = {
            "p50_ms": [r.get("p50_ms") for r in seq],
            "cpu_us_per_req": [r.get("cpu_us_per_req") for r in thr],
            "rps": [r.get("rps") for r in thr],
        }
        log(f"resilience {name}: p50 {summary[name]['p50_ms']} ms one at a time; "
            f"{summary[name]['rps']} req/s and {summary[name]['cpu_us_per_req']} µs CPU/req "
            f"at {conns} conns")
    run.results["resilience"] = {"summary": summary, "runs": out}
