"""Provider kinds come from the ``gateway.providers`` entry-point group, built-ins included.

``load_provider_kinds()`` reads the entry points once per process; a ``ProviderRegistry``
turns configured upstreams into live provider instances, by configured name.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points

import httpx

from providers.base import Provider, ProviderConfig, ProviderFactory

ENTRY_POINT_GROUP = "gateway.providers"

log = logging.getLogger(__name__)


class UnknownProviderKind(LookupError):
    """A configured provider names a kind no installed plugin provides."""


class UnknownProvider(LookupError):
    """No provider is configured under that name."""


@functools.cache
def _load_entry_points() -> tuple[tuple[str, ProviderFactory], ...]:
    kinds = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            kinds.append((ep.name, ep.load()))
        except Exception:
            # One broken third-party plugin must not take the others down; a config
            # that uses it fails later with UnknownProviderKind, naming what is installed.
            log.exception("could not load provider plugin %r (%s)", ep.name, ep.value)
    return tuple(kinds)


def load_provider_kinds() -> dict[str, ProviderFactory]:
    """Every installed provider kind, by entry-point name (read once, copied per call)."""
    return dict(_load_entry_points())


class ProviderRegistry:
    """Live providers by configured name; build once at startup, close at shutdown."""

    def __init__(self, kinds: Mapping[str, ProviderFactory] | None = None) -> None:
        self._kinds = dict(load_provider_kinds() if kinds is None else kinds)
        self._providers: dict[str, Provider] = {}

    @property
    def kinds(self) -> frozenset[str]:
        """The provider kinds this registry can build."""
        return frozenset(self._kinds)

    def build(self, configs: Iterable[ProviderConfig],
              transport: httpx.AsyncBaseTransport) -> None:
        """Instantiate one provider per config, all sharing ``transport``."""
        built: dict[str, Provider] = {}
        for config in configs:
            factory = self._kinds.get(config.kind)
            if factory is None:
                raise UnknownProviderKind(
                    f"provider {config.name!r} has kind {config.kind!r}, which no installed "
                    f"plugin provides (installed: {', '.join(sorted(self._kinds)) or 'none'})")
            if config.name in built or config.name in self._providers:
                raise ValueError(f"provider name {config.name!r} is configured twice")
            built[config.name] = factory(config, transport)
        self._providers.update(built)

    def get(self, name: str) -> Provider:
        """The provider configured as ``name``; raises UnknownProvider."""
        try:
            return self._providers[name]
        except KeyError:
            raise UnknownProvider(f"no provider named {name!r} is configured") from None

    def __contains__(self, name: object) -> bool:
        return name in self._providers

    def names(self) -> list[str]:
        """Configured provider names, in configuration order."""
        return list(self._providers)

    async def aclose(self) -> None:
        """Close every provider; one failing does not stop the others closing."""
        providers, self._providers = list(self._providers.values()), {}
        for provider in providers:
            try:
                await provider.aclose()
            except Exception:
                log.exception("closing provider %r failed", provider.kind)
