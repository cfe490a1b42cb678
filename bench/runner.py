"""One benchmark run: start everything pinned, run the scenarios, write JSON and Markdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib.metadata
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from bench import procs, report, scenarios_http, scenarios_stream, services, soak, wrk
from bench.harness import MODES, Mode, Run, Target, log
from bench.services import PLAN_LIMITS, UPSTREAM_MAX_CONNECTIONS, Backends

SCENARIOS = ("selfcheck", "sequential", "throughput", "fixed", "anthropic", "resilience",
             "streaming", "open", "soak", "backends")
RESULTS = Path(__file__).resolve().parent / "results"


def _loop_run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)  # type: ignore[arg-type]


def _versions() -> dict[str, str]:
    out = {}
    for name in ("uvicorn", "starlette", "sse-starlette", "httpx", "httpcore", "anyio",
                 "sqlalchemy", "aiosqlite", "asyncpg", "redis", "orjson", "uvloop",
                 "httptools", "tiktoken"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[name] = importlib.metadata.version(name)
    return out


def _git() -> str | None:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=services.REPO,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=services.REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    return None


def _meta(mode: Mode, use_wrk: bool, nginx: bool) -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), platform.processor())
    return {"mode": mode.name, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "git": _git(), "versions": _versions(), "wrk": use_wrk, "nginx": nginx,
            "mode_settings": mode.__dict__}


async def _scenarios(run: Run, selected: set[str], soak_seconds: float) -> None:
    run.results["check"] = await scenarios_http.check_responses(run)
    await run.warmup()
    steps: list[tuple[str, Callable[[Run], Awaitable[None]]]] = [
        ("selfcheck", scenarios_http.mock_selfcheck), ("sequential", scenarios_http.sequential),
        ("throughput", scenarios_http.throughput), ("fixed", scenarios_http.fixed_rate),
        ("anthropic", scenarios_http.anthropic_route),
        ("resilience", scenarios_http.resilience),
        ("anthropic", scenarios_stream.anthropic_stream),
        ("streaming", scenarios_stream.streaming), ("open", scenarios_stream.open_streams)]
    for name, step in steps:
        if name in selected:
            log(f"scenario {step.__name__}")
            await step(run)
    if "soak" in selected and soak_seconds > 0:
        await run.fresh()
        await soak.soak(run, soak_seconds)
    run.results["gateway_final"] = {"rss_mb": round(run.gateway.proc.rss() / 2**20, 1),
                                    "ready": await run.ready(run.gateway)}


async def _backend_scenarios(run: Run, selected: set[str]) -> None:
    run.results["check"] = await scenarios_http.check_responses(run)
    await run.warmup()
    for name, step in (("sequential", scenarios_http.sequential),
                       ("throughput", scenarios_http.throughput),
                       ("fixed", scenarios_http.fixed_rate),
                       ("streaming", scenarios_stream.streaming)):
        if name in selected:
            log(f"scenario {step.__name__} (postgres + redis)")
            await step(run)


def _backends(mode: Mode, work: Path, mock: procs.Proc, bare: procs.Proc, selected: set[str],
              variant: str | None) -> dict[str, Any]:
    """Scenario 6: the same with PostgreSQL storage and the Redis limiter."""
    label = "PostgreSQL + Redis"
    if (why := services.external_missing()) is not None:
        return {"label": label, "skipped": why}
    log("starting PostgreSQL and Redis (pinned to the load core)")
    ext = services.start_external(work)
    gateway = None
    run: Run | None = None
    try:
        env = services.gateway_env(work, mock.port,
                                   Backends("pg", ext.database_url, ext.redis_url), variant)
        key = services.prepare_gateway(env)
        gateway = services.start_gateway(env, work, "pg")
        restart = functools.partial(services.start_gateway, env, work, "pg")
        bmode = replace(mode, conns=mode.backend_conns, chunks=(max(mode.chunks),),
                        fixed_fractions=(0.5,))
        run = Run(bmode, work, Target("direct", mock),
                  Target("gateway", gateway, {"Authorization": f"Bearer {key}"}, True, ext),
                  None, wrk.available(), restart=restart, bare=Target("bare", bare))
        _loop_run(_backend_scenarios(run, selected))
        return {"label": label, **run.results}
    finally:
        if run is not None:
            run.gateway.proc.stop()
        elif gateway is not None:
            gateway.stop()
        ext.stop()


def run(mode_name: str, *, soak_seconds: float | None = None, use_nginx: bool = True,
        only: set[str] | None = None, out_dir: Path = RESULTS,
        keep_work: bool = False, variant: str | None = None) -> Path:
    """Run a whole benchmark; return the path of the JSON result."""
    mode = MODES[mode_name]
    selected = set(only or SCENARIOS)
    soak_s = mode.soak_seconds if soak_seconds is None else soak_seconds
    procs.raise_nofile()
    procs.pin_self(procs.LOAD_CORE)
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    use_wrk = wrk.available()
    started: list[procs.Proc] = []
    bench: Run | None = None
    notes = [
        f"Gateway pinned to core {procs.GATEWAY_CORE}; mock, load generator (and PostgreSQL/"
        f"Redis) on core {procs.LOAD_CORE}. nginx: one worker on the gateway's core.",
        "Bare relay: Starlette + uvicorn relaying to the mock through aiohttp, on the gateway's "
        "core (bench/bare_relay.py): no auth, limits or storage; the ratios are against it.",
        "Auth (API key), rate limiting and persistence on; the bench user is on 'enterprise', "
        "whose limits were raised for the run in subscription_plans: "
        + ", ".join(f"{k}={v:,}" for k, v in PLAN_LIMITS.items()) + ".",
        f"GATEWAY_UPSTREAM_MAX_CONNECTIONS={UPSTREAM_MAX_CONNECTIONS} (default 512 would cap "
        "open streams per process at 512); GATEWAY_BCRYPT_ROUNDS=4 (only the bench user's "
        "password is hashed with it; API keys use HMAC).",
        "Each scenario starts from a fresh gateway process (same data), warmed up with 16 "
        "connections: pooled upstream connections left by one step would skew the next.",
        "Non-streaming: clients send stream=false and the gateway asks the mock for one JSON "
        "body too (4 chunks' worth of text + usage), as mock direct and nginx do.",
        "Non-streaming closed-loop load: " + ("wrk (1 thread)." if use_wrk else
                                              "Python client (wrk not found)."),
    ]
    if variant:
        notes.insert(0, f"EXPERIMENT: the gateway ran with bench.variants '{variant}' — not the "
                     "shipped code path (see bench/variants.py).")
    try:
        mock = services.start_mock(work)
        started.append(mock)
        bare = services.start_bare(work, mock.port)
        started.append(bare)
        env = services.gateway_env(work, mock.port, Backends("sqlite"), variant)
        key = services.prepare_gateway(env)
        gateway = services.start_gateway(env, work, "sqlite")
        started.append(gateway)
        nginx = services.start_nginx(work, mock.port, work) if use_nginx else None
        if nginx is not None:
            started.append(nginx)
        elif use_nginx:
            notes.append("nginx not found: no reference row.")
        log(f"mock :{mock.port}, bare relay :{bare.port}, gateway :{gateway.port}"
            + (f", nginx :{nginx.port}" if nginx else "") + f"; work dir {work}")
        bench = Run(mode, work, Target("direct", mock),
                    Target("gateway", gateway, {"Authorization": f"Bearer {key}"}, True),
                    Target("nginx", nginx) if nginx else None, use_wrk, notes=notes,
                    restart=functools.partial(services.start_gateway, env, work, "sqlite"),
                    bare=Target("bare", bare))
        bench.results["meta"] = _meta(mode, use_wrk, nginx is not None) | {"variant": variant}
        _loop_run(_scenarios(bench, selected, soak_s))
        bench.gateway.proc.stop()
        if nginx is not None:
            nginx.stop()
        if "backends" in selected:
            bench.results["backends"] = _backends(mode, work, mock, bare, selected, variant)
        results = {**bench.results, "notes": notes}
        results["targets"] = report.targets(results)
    finally:
        for proc in started:
            proc.stop()
        if bench is not None:
            bench.gateway.proc.stop()
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = f"-{variant.replace(',', '+')}" if variant else ""
    stem = out_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{mode.name}{suffix}"
    json_path = stem.with_suffix(".json")
    json_path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    md = report.markdown(results)
    stem.with_suffix(".md").write_text(md)
    print(md)
    log(f"wrote {json_path} and {stem.with_suffix('.md')}")
    return json_path
