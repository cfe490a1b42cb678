"""Provider kinds load through entry points; registries hold built providers by name."""

from __future__ import annotations

from typing import ClassVar

import httpx
import pytest

from providers.anthropic import AnthropicProvider
from providers.base import Provider, ProviderConfig
from providers.demo import DemoProvider
from providers.openai import OpenAIProvider
from providers.registry import (
    ProviderRegistry,
    UnknownProvider,
    UnknownProviderKind,
    load_provider_kinds,
)
from providers.together import TogetherProvider


def test_built_in_kinds_load_through_entry_points() -> None:
    kinds = load_provider_kinds()
    assert {name: kinds[name] for name in ("openai", "together", "anthropic", "demo")} == {
        "openai": OpenAIProvider, "together": TogetherProvider,
        "anthropic": AnthropicProvider, "demo": DemoProvider}
    for name in ("openai", "together", "anthropic", "demo"):
        assert kinds[name].kind == name
    kinds.clear()
    assert "demo" in load_provider_kinds()  # callers get a copy


async def test_every_built_in_satisfies_the_protocol(transport: httpx.AsyncBaseTransport) -> None:
    for name, factory in load_provider_kinds().items():
        provider = factory(ProviderConfig(name=name, kind=name), transport)
        assert isinstance(provider, Provider)
        await provider.aclose()


class FakeProvider:
    kind: ClassVar[str] = "fake"
    supports_n: ClassVar[bool] = False
    closed: ClassVar[list[str]] = []

    def __init__(self, config: ProviderConfig, transport: httpx.AsyncBaseTransport) -> None:
        self.config = config
        self.transport = transport

    async def stream_chat(self, req, ctx):  # pragma: no cover - never streamed here
        yield None

    async def aclose(self) -> None:
        self.closed.append(self.config.name)


async def test_registry_from_explicit_kinds(transport: httpx.AsyncBaseTransport) -> None:
    registry = ProviderRegistry({"fake": FakeProvider, "demo": DemoProvider})
    assert registry.kinds == {"fake", "demo"}
    registry.build([ProviderConfig(name="a", kind="fake"), ProviderConfig(name="b", kind="fake"),
                    ProviderConfig(name="local", kind="demo")], transport)
    assert registry.names() == ["a", "b", "local"]
    assert "a" in registry and "zzz" not in registry
    provider = registry.get("a")
    assert isinstance(provider, FakeProvider) and provider.transport is transport
    assert isinstance(registry.get("local"), DemoProvider)
    with pytest.raises(UnknownProvider, match="'zzz'"):
        registry.get("zzz")
    await registry.aclose()
    assert FakeProvider.closed == ["a", "b"]
    assert registry.names() == []


def test_unknown_kind_names_what_is_installed(transport: httpx.AsyncBaseTransport) -> None:
    registry = ProviderRegistry({"demo": DemoProvider})
    with pytest.raises(UnknownProviderKind, match=r"kind 'gemini'.*installed: demo"):
        registry.build([ProviderConfig(name="g", kind="gemini")], transport)


def test_duplicate_names_are_rejected(transport: httpx.AsyncBaseTransport) -> None:
    registry = ProviderRegistry({"demo": DemoProvider})
    with pytest.raises(ValueError, match="configured twice"):
        registry.build([ProviderConfig(name="x", kind="demo"),
                        ProviderConfig(name="x", kind="demo")], transport)
    assert registry.names() == []  # nothing half-built


def test_default_registry_uses_entry_points() -> None:
    assert {"openai", "together", "anthropic", "demo"} <= ProviderRegistry().kinds
