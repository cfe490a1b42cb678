"""What the routing layer (``gateway.resilience.router.Router.run``) costs a call on the
happy path, measured without servers or sockets: an upstream call that answers at once,
through a route with one target, one balanced over two targets with a fallback, and one
whose primary's breaker is open (every call skips it for the fallback).
Run: ``python -m bench.routing_cost``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.auth.principal import Plan, Principal
from gateway.catalog import ModelCatalog
from gateway.resilience.balance import Deployment
from gateway.resilience.router import Router
from gateway.settings import ModelRoute, ProviderSettings, RouteTarget

CALLS = 20_000


class _Instant:
    """A provider stand-in: only what the router reads."""

    kind = "bench"
    supports_n = True


def catalog() -> ModelCatalog:
    providers = {name: _Instant() for name in ("a", "b", "dead")}
    settings = {name: ProviderSettings(kind="openai") for name in ("a", "b")}
    settings["dead"] = ProviderSettings(kind="openai", breaker_failures=1,
                                        breaker_cooldown_seconds=3600)
    routes = {
        "plain": ModelRoute(provider="a", upstream="m"),
        "balanced": ModelRoute(targets=[RouteTarget(provider="a", upstream="m"),
                                        RouteTarget(provider="b", upstream="m")],
                               fallbacks=["plain"]),
        "dead-primary": ModelRoute(provider="dead", upstream="m", fallbacks=["plain"]),
    }
    return ModelCatalog(routes, providers, settings, created=0)  # type: ignore[arg-type]


async def measure() -> dict[str, float]:
    models = catalog()
    router = Router(models, backoff_base=0.25, backoff_cap=8.0)
    principal = Principal(user_id=None, email="", via="api_key",  # type: ignore[arg-type]
                          plan=Plan("bench", 10**9, 10**9, 10**9, 0.0))

    async def answer(target: Deployment) -> str:
        return "ok"

    for deployment, _ in models.resolve("dead-primary", principal).targets:
        deployment.breaker.failure()  # opened: every call now skips it
    out: dict[str, float] = {}
    for name in ("plain", "balanced", "dead-primary"):
        route = models.resolve(name, principal)
        best = float("inf")
        for _ in range(5):  # the best of five: a busy machine's pauses fall between runs
            start = time.perf_counter()
            for _ in range(CALLS):
                _, served = await router.run(route, principal, answer, [],
                                             deadline=time.monotonic() + 600)
                served.deployment.in_flight -= 1
            best = min(best, (time.perf_counter() - start) / CALLS * 1e6)
        out[name] = best
    return out


def main() -> dict[str, Any]:
    results = asyncio.run(measure())
    for name, us in results.items():
        print(f"{name:>13}: {us:5.2f} µs per call through Router.run")
    return results


if __name__ == "__main__":
    main()
