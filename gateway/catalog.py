"""Model routing: a public model name (or alias) → a configured provider and upstream id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.auth.principal import Principal
from gateway.errors import model_not_found
from gateway.settings import ModelRoute, ProviderSettings
from providers.base import Provider


@dataclass(frozen=True, slots=True)
class Target:
    public: str
    provider_name: str
    provider: Provider
    upstream: str
    owned_by: str


class ModelCatalog:
    """Built once in the lifespan from the settings' routes and the provider registry."""

    def __init__(self, routes: dict[str, ModelRoute], providers: dict[str, Provider],
                 provider_settings: dict[str, ProviderSettings], created: int) -> None:
        self._targets: dict[str, Target] = {}
        for public, route in routes.items():
            spec = provider_settings[route.provider]
            self._targets[public] = Target(
                public=public, provider_name=route.provider,
                provider=providers[route.provider], upstream=route.upstream,
                owned_by=spec.owned_by or route.provider)
        self._created = created

    def resolve(self, model: str, principal: Principal) -> Target:
        """The target for ``model``, or a 404 if it is unknown or outside the caller's plan."""
        target = self._targets.get(model)
        if target is None or not principal.plan.allows_model(model):
            raise model_not_found(model)
        return target

    def get(self, model: str) -> Target | None:
        return self._targets.get(model)

    def describe(self, target: Target) -> dict[str, Any]:
        return {"id": target.public, "object": "model", "created": self._created,
                "owned_by": target.owned_by}

    def visible_to(self, principal: Principal) -> list[dict[str, Any]]:
        return [self.describe(t) for name, t in sorted(self._targets.items())
                if principal.plan.allows_model(name)]
