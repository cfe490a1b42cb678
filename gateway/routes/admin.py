"""/admin: read-only operator views, for users with the admin flag (``gateway set-admin``)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from gateway.auth.principal import require_admin
from gateway.http import JSONResponse


async def upstreams(request: Request) -> JSONResponse:
    """Each upstream target's circuit breaker and load, and each model's targets."""
    state = request.app.state
    require_admin(await state.auth.authenticate(request))
    # Live state: a cached copy would show a breaker as open after it closed.
    return JSONResponse(state.catalog.snapshot(), headers={"cache-control": "no-store"})


routes = [
    Route("/admin/upstreams", upstreams, methods=["GET"]),
]
