"""One call's way through its model's deployments: retries, balancing, breakers, fallbacks.

The order: the route's targets as its balancer orders them, each retried up to its
provider's ``max_retries`` on a transient error (with backoff, or the upstream's own
``retry-after`` when it is within the cap), then each fallback the caller's plan allows,
the same way. A target whose breaker is open is skipped. A request the upstream refused as
invalid ends the call at once, except a prompt too long for the model, which moves on to
the route's ``context_fallbacks``. Everything happens before the first byte reaches the
client, and within the call's deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio

from gateway.auth.principal import Principal
from gateway.catalog import ModelCatalog, Route
from gateway.errors import APIError, retry_headers
from gateway.resilience.balance import Deployment
from gateway.resilience.policy import (
    breaker_failure,
    context_overflow,
    retry_delay,
    retryable,
)
from providers.errors import ProviderError, UpstreamBadRequest

T = TypeVar("T")


@dataclass(slots=True)
class Attempt:
    """One upstream call made for a request, as stored in ``upstream_attempts``."""

    target: Deployment
    model: str  # the public model (route) it was made for
    status: int | None  # the upstream's HTTP status (200 once it answered), if any
    code: str | None  # the error's code (the gateway's, else the upstream's); None: answered
    ms: int

    def view(self) -> dict[str, object]:
        return {"target": self.target.name, "model": self.model, "status": self.status,
                "code": self.code, "ms": self.ms}


@dataclass(frozen=True, slots=True)
class Served:
    """Who answered: the route (the fallback's, after a fallback) and its deployment."""

    route: Route
    deployment: Deployment


def breakers_open(model: str, wait: float) -> APIError:
    """Every target of the call is paused by its breaker: fail fast, say when to retry."""
    return APIError(503, f"Model '{model}' is unavailable: its upstreams failed repeatedly "
                    "and are paused (circuit breaker open). Retry later.",
                    type="api_error", code="upstream_unavailable", headers=retry_headers(wait))


@dataclass(slots=True)
class _Trial:
    """The state of one ``Router.run``."""

    attempts: list[Attempt]
    deadline: float  # time.monotonic() by which the call must end
    needs_n: bool
    needs: str | None  # a capability every target tried must have (embeddings), if any
    last: ProviderError | None = None
    paused: list[float] = field(default_factory=list)  # breakers' waits, for the 503


class Router:
    """Built once in the lifespan; ``run`` is called for every upstream call."""

    def __init__(self, catalog: ModelCatalog, *, backoff_base: float, backoff_cap: float,
                 rng: random.Random | None = None,
                 sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
                 on_error: Callable[[str, BaseException], None] | None = None) -> None:
        """``on_error(provider, exc)`` hears of every failed attempt but a cancelled one
        (gateway_upstream_errors_total)."""
        self._catalog = catalog
        self._base = backoff_base
        self._cap = backoff_cap
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._on_error = on_error

    async def run(self, route: Route, principal: Principal,
                  call: Callable[[Deployment], Awaitable[T]], attempts: list[Attempt], *,
                  deadline: float, needs_n: bool = False,
                  needs: str | None = None) -> tuple[T, Served]:
        """``call`` one deployment after another until one answers; the answer and who
        gave it. Raises the last ``ProviderError`` when all failed, or a 503 ``APIError``
        when breakers kept every target from being called. ``attempts`` gets each call.
        With ``needs``, targets (and fallbacks) without that capability are passed over.

        The deployment that answered keeps the call counted in its ``in_flight``: the
        caller ends it (``Served.deployment.in_flight -= 1``) when the call ends."""
        trial = _Trial(attempts, deadline, needs_n, needs)
        routes = [route]
        rerouted = False
        i = 0
        while i < len(routes):
            current = routes[i]
            i += 1
            try:
                served = await self._try_route(current, call, trial)
            except ProviderError as exc:
                if rerouted or not context_overflow(exc):
                    raise
                # Too long for this model: only the requested model's context_fallbacks.
                rerouted = True
                routes = [r for r in self._catalog.allowed(route.context_fallbacks, principal)
                          if r is not current]
                i = 0
                if not routes:
                    raise
                continue
            if served is not None:
                return served
            if current is route and not rerouted:
                routes += [r for r in self._catalog.allowed(route.fallbacks, principal)
                           if r is not route]
        if trial.last is not None:
            raise trial.last
        raise breakers_open(route.public, min(trial.paused, default=1.0))

    async def _try_route(self, route: Route, call: Callable[[Deployment], Awaitable[T]],
                         trial: _Trial) -> tuple[T, Served] | None:
        """Each target of ``route`` with its retries; None when none answered. Raises a
        refusal of the request itself (a 400, or a prompt too long), which no retry fixes."""
        for deployment in route.balancer.order():
            if trial.needs_n and not deployment.provider.supports_n:
                continue
            if trial.needs is not None and trial.needs not in deployment.capabilities:
                continue
            for retry in range(deployment.max_retries + 1):
                if time.monotonic() >= trial.deadline:
                    return None
                if not deployment.breaker.allow():
                    trial.paused.append(deployment.breaker.retry_in())
                    break
                try:
                    answer = await self._attempt(deployment, route, call, trial.attempts)
                except ProviderError as exc:
                    trial.last = exc
                    if isinstance(exc, UpstreamBadRequest) or context_overflow(exc):
                        raise
                    if not retryable(exc) or retry == deployment.max_retries:
                        break
                    delay = retry_delay(exc, retry, self._base, self._cap, self._rng)
                    if delay is None or time.monotonic() + delay >= trial.deadline:
                        break
                    await self._sleep(delay)
                    continue
                return answer, Served(route, deployment)
        return None

    async def _attempt(self, deployment: Deployment, route: Route,
                       call: Callable[[Deployment], Awaitable[T]],
                       attempts: list[Attempt]) -> T:
        """One upstream call, counted in flight and judged by the breaker."""
        breaker = deployment.breaker
        deployment.in_flight += 1
        started = time.perf_counter()
        try:
            answer = await call(deployment)
        except ProviderError as exc:
            deployment.in_flight -= 1
            # Never None for a failure: an upstream 400 has no gateway code of its own.
            code = exc.code or exc.upstream_code or exc.type
            attempts.append(Attempt(deployment, route.public, exc.upstream_status, code,
                                    _ms(started)))
            if breaker_failure(exc):
                breaker.failure()
            else:
                breaker.release()  # a 4xx says nothing about the upstream's health
            if self._on_error is not None:
                self._on_error(deployment.provider_name, exc)
            raise
        except BaseException as exc:  # the client left, or a bug in a provider plugin
            deployment.in_flight -= 1
            code = ("cancelled" if isinstance(exc, anyio.get_cancelled_exc_class())
                    else "internal_error")
            attempts.append(Attempt(deployment, route.public, None, code, _ms(started)))
            breaker.release()
            if code == "internal_error" and self._on_error is not None:
                self._on_error(deployment.provider_name, exc)
            raise
        breaker.success()
        attempts.append(Attempt(deployment, route.public, 200, None, _ms(started)))
        return answer


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
