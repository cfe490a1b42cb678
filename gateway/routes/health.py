"""/health (liveness, no I/O) and /ready (database and, when configured, Redis reachable)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from starlette.requests import Request
from starlette.routing import Route

from gateway.http import JSONResponse

_HEALTHY = JSONResponse({"status": "ok"})


async def health(_request: Request) -> JSONResponse:
    return _HEALTHY


async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(2):
            async with state.engine.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    redis = getattr(state, "redis", None)
    if redis is not None:
        try:
            async with asyncio.timeout(2):
                await redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    writer = state.writer.stats
    return JSONResponse({"status": "ok" if ok else "unavailable", "checks": checks,
                         "writer": {"pending": state.writer.pending, "dropped": writer.dropped,
                                    "written": writer.written, "waits": writer.waits}},
                        status_code=200 if ok else 503)


routes = [Route("/health", health, methods=["GET"]), Route("/ready", ready, methods=["GET"])]
