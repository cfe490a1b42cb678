"""GET /rate-limit: the caller's plan, limits, current usage, in-flight calls, reset times,
each budget's spend in its period, and which of the models served here the plan includes
(so a client can say why a model it sees configured is not offered, instead of hiding
it)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from gateway.auth.principal import Principal
from gateway.budgets import budget_view, budgets_for
from gateway.catalog import ModelCatalog
from gateway.errors import limiter_unavailable
from gateway.http import JSONResponse
from gateway.limits import limits_for, rate_limit_headers
from gateway.ratelimit.base import Decision, RateLimiterUnavailable, WindowState
from providers.base import CHAT


def _window(w: WindowState) -> dict:
    return {"limit": w.limit, "remaining": max(0, w.remaining), "used": w.limit - w.remaining,
            "reset_seconds": round(w.reset_seconds, 3)}


async def rate_limit(request: Request) -> JSONResponse:
    state = request.app.state
    principal = await state.auth.authenticate(request)
    limits = limits_for(principal)
    try:
        status = await state.limiter.status(principal.subject, limits)
        spends = await state.call_services.budgets.status(budgets_for(principal))
    except RateLimiterUnavailable:
        raise limiter_unavailable() from None
    headers = rate_limit_headers(Decision(
        allowed=True, requests=status.requests, tokens=status.tokens,
        concurrent_limit=status.concurrent_limit, concurrent_in_use=status.concurrent_in_use))
    return JSONResponse({
        "plan": principal.plan.name,
        "limits": {"requests_per_minute": limits.requests_per_minute,
                   "tokens_per_minute": limits.tokens_per_minute,
                   "concurrent_requests": limits.concurrent_requests},
        "requests": _window(status.requests),
        "tokens": _window(status.tokens),
        "concurrent": {"limit": status.concurrent_limit, "in_use": status.concurrent_in_use},
        "budgets": [budget_view(spend) for spend in spends],
        "models": _models(state.catalog, principal),
    }, headers=headers)


def _models(catalog: ModelCatalog, principal: Principal) -> dict[str, list[str]]:
    """The served models split by the caller's plan: ``available`` is what ``/v1/models``
    lists for this caller; ``not_in_plan`` are served here but need another plan; ``chat``
    names those that chat, whatever the plan (a chat picker shows no embedding model)."""
    allowed = principal.plan.allows_model
    names = catalog.names()
    return {"available": [n for n in names if allowed(n)],
            "not_in_plan": [n for n in names if not allowed(n)],
            "chat": catalog.names(CHAT)}


routes = [Route("/rate-limit", rate_limit, methods=["GET"])]
