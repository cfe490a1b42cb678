"""Model routing: a public model name (or alias) → its deployments, balancing and fallbacks.

Each deployment (a provider serving an upstream model) exists once, whichever routes name
it, so its circuit breaker and its calls in flight are counted once per process.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.auth.principal import Principal
from gateway.errors import model_not_found
from gateway.resilience.balance import Balancer, Deployment
from gateway.resilience.breaker import CircuitBreaker
from gateway.settings import ModelRoute, ProviderSettings
from providers.base import Provider, capabilities

log = logging.getLogger("gateway")


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """What one public model name resolves to."""

    public: str
    balancer: Balancer
    targets: tuple[tuple[Deployment, float], ...]
    strategy: str
    fallbacks: tuple[str, ...]
    context_fallbacks: tuple[str, ...]
    owned_by: str
    timeout: float  # the call's deadline, from its start: the first target's total_timeout
    supports_n: bool  # some target can answer n > 1 choices in one call
    capabilities: frozenset[str]  # what some target can be called for: chat, embeddings
    description: str | None  # what the first target's provider says of the model, if anything
    cache: bool = False  # chat answers come from the response cache unless a call says off
    cache_ttl: float | None = None  # seconds an answer is kept; None: the global default


class ModelCatalog:
    """Built once in the lifespan from the settings' routes and the provider registry."""

    def __init__(self, routes: dict[str, ModelRoute], providers: dict[str, Provider],
                 provider_settings: dict[str, ProviderSettings], created: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 rng: random.Random | None = None) -> None:
        rng = rng or random.Random()
        self._deployments: dict[tuple[str, str], Deployment] = {}
        self._routes: dict[str, Route] = {}
        for public, spec in routes.items():
            targets = []
            for target in spec.target_list():
                key = (target.provider, target.upstream)
                deployment = self._deployments.get(key)
                if deployment is None:
                    settings = provider_settings[target.provider]
                    provider = providers[target.provider]
                    deployment = Deployment(
                        provider_name=target.provider, provider=provider,
                        upstream=target.upstream, max_retries=settings.max_retries,
                        breaker=CircuitBreaker(settings.breaker_failures,
                                               settings.breaker_cooldown_seconds, clock),
                        capabilities=capabilities(provider, target.upstream))
                    self._deployments[key] = deployment
                targets.append((deployment, target.weight))
            first = provider_settings[targets[0][0].provider_name]
            self._routes[public] = Route(
                public=public, balancer=Balancer(spec.strategy, targets, rng),
                targets=tuple(targets), strategy=spec.strategy,
                fallbacks=self._enabled(public, "fallbacks", spec.fallbacks, routes),
                context_fallbacks=self._enabled(public, "context_fallbacks",
                                                spec.context_fallbacks, routes),
                owned_by=first.owned_by or targets[0][0].provider_name,
                timeout=first.total_timeout,
                supports_n=any(d.provider.supports_n for d, _ in targets),
                capabilities=frozenset().union(*(d.capabilities for d, _ in targets)),
                description=_description(targets[0][0]),
                cache=spec.cache, cache_ttl=spec.cache_ttl_seconds)
        self._created = created

    @staticmethod
    def _enabled(public: str, field: str, names: list[str],
                 routes: dict[str, ModelRoute]) -> tuple[str, ...]:
        """The fallbacks that are served here; one whose provider is not enabled (no key
        configured) is left out, with a warning rather than a failed start."""
        for name in names:
            if name not in routes:
                log.warning("models.%s.%s: %r is not enabled here; it is skipped", public,
                            field, name)
        return tuple(name for name in names if name in routes)

    def resolve(self, model: str, principal: Principal) -> Route:
        """The route for ``model``, or a 404 if it is unknown or outside the caller's plan."""
        route = self._routes.get(model)
        if route is None or not principal.plan.allows_model(model):
            raise model_not_found(model)
        return route

    def allowed(self, names: tuple[str, ...], principal: Principal) -> list[Route]:
        """The routes named (fallbacks), in order, that the caller's plan allows."""
        return [self._routes[name] for name in names if principal.plan.allows_model(name)]

    def describe(self, route: Route) -> dict[str, Any]:
        """A model as ``/v1/models`` lists it: OpenAI's fields, plus ``capabilities`` (the
        gateway's APIs it can be called through) and the provider's ``description``."""
        out = {"id": route.public, "object": "model", "created": self._created,
               "owned_by": route.owned_by, "capabilities": sorted(route.capabilities)}
        if route.description:
            out["description"] = route.description
        return out

    def names(self, capability: str | None = None) -> list[str]:
        """Every public model name served here (that can do ``capability``), sorted."""
        return sorted(name for name, route in self._routes.items()
                      if capability is None or capability in route.capabilities)

    def visible_to(self, principal: Principal) -> list[dict[str, Any]]:
        return [self.describe(r) for name, r in sorted(self._routes.items())
                if principal.plan.allows_model(name)]

    def snapshot(self) -> dict[str, Any]:
        """Breakers, calls in flight and routes of this process (``GET /admin/upstreams``)."""
        return {
            "object": "list",
            "upstreams": [d.snapshot() for d in self._deployments.values()],
            "models": [{"id": r.public, "strategy": r.strategy,
                        "targets": [{"name": d.name, "weight": w} for d, w in r.targets],
                        "fallbacks": list(r.fallbacks),
                        "context_fallbacks": list(r.context_fallbacks)}
                       for _, r in sorted(self._routes.items())],
        }


def _description(deployment: Deployment) -> str | None:
    """A provider's own words on one of its models (``description(upstream)``), if any."""
    describe = getattr(deployment.provider, "description", None)
    return describe(deployment.upstream) if callable(describe) else None
