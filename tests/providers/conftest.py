"""Fixtures for provider tests: recorded upstream bodies replayed at the HTTP boundary."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from providers.anthropic import AnthropicProvider
from providers.base import CallContext, ChatRequest, Chunk, Provider, ProviderConfig
from providers.openai import OpenAIProvider
from providers.together import TogetherProvider
from providers.upstream import HTTPStreamProvider

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"

# Split patterns for replayed bodies: whole, every byte alone, and an awkward 1-7 cycle
# that lands inside multi-byte UTF-8 characters, "\n\n" pairs and JSON tokens.
SPLITS: dict[str, Sequence[int]] = {
    "whole": (1 << 30,),
    "bytewise": (1,),
    "awkward": (3, 1, 7, 2, 5, 1, 4, 6),
}


class TrickleStream(httpx.AsyncByteStream):
    """A response body served in tiny reads; records reads and whether it was closed.

    ``fail_at`` raises ``error`` once that many bytes were served (a mid-stream network
    failure); ``hang`` waits forever after the last byte (an upstream that stalls).
    """

    def __init__(self, data: bytes, sizes: Sequence[int] = (1 << 30,), *,
                 fail_at: int | None = None, error: Exception | None = None,
                 hang: bool = False) -> None:
        self.data = data
        self.sizes = sizes
        self.fail_at = fail_at
        self.error = error
        self.hang = hang
        self.served = 0
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        i = 0
        while self.served < len(self.data):
            if self.fail_at is not None and self.served >= self.fail_at:
                assert self.error is not None
                raise self.error
            size = self.sizes[i % len(self.sizes)]
            i += 1
            piece = self.data[self.served:self.served + size]
            self.served += len(piece)
            yield piece
        if self.hang:
            await asyncio.Event().wait()

    async def aclose(self) -> None:
        self.closed = True


Replay = Callable[..., tuple[httpx.Response, TrickleStream]]


@pytest.fixture
def fixture_bytes() -> Callable[[str], bytes]:
    """Read a recorded upstream body from tests/fixtures/upstream."""
    return lambda name: (FIXTURES / name).read_bytes()


@pytest.fixture
def replay(fixture_bytes: Callable[[str], bytes]) -> Replay:
    """``replay(name_or_bytes, split, **options)`` returns (response, body stream)."""
    def make(source: str | bytes, split: str = "whole", *, status: int = 200,
             headers: dict[str, str] | None = None, **options: object
             ) -> tuple[httpx.Response, TrickleStream]:
        data = fixture_bytes(source) if isinstance(source, str) else source
        body = TrickleStream(data, SPLITS[split], **options)  # type: ignore[arg-type]
        response = httpx.Response(status, stream=body,
                                  headers={"content-type": "text/event-stream; charset=utf-8",
                                           **(headers or {})})
        return response, body
    return make


@pytest.fixture(scope="session")
async def transport() -> AsyncIterator[httpx.AsyncBaseTransport]:
    """One transport for the session, shared as in the gateway (respx intercepts below it)."""
    async with httpx.AsyncHTTPTransport() as shared:
        yield shared


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        yield router


@pytest.fixture
def ctx() -> CallContext:
    return CallContext(request_id="req_test_1", user_id="user_1")


@pytest.fixture
def collect(ctx: CallContext) -> Callable[[Provider, ChatRequest], object]:
    """Run a provider to completion (closing it properly) and return its chunks."""
    async def run(provider: Provider, req: ChatRequest) -> list[Chunk]:
        async with aclosing(provider.stream_chat(req, ctx)) as stream:
            return [chunk async for chunk in stream]
    return run


@pytest.fixture
def providers(transport: httpx.AsyncBaseTransport) -> dict[str, HTTPStreamProvider]:
    return {
        "openai": OpenAIProvider(ProviderConfig(name="openai", kind="openai",
                                                api_key="sk-test"), transport),
        "anthropic": AnthropicProvider(ProviderConfig(name="anthropic", kind="anthropic",
                                                      api_key="sk-ant-test"), transport),
        "together": TogetherProvider(ProviderConfig(name="together", kind="together",
                                                    api_key="tg-key"), transport),
    }


@pytest.fixture
def complete(ctx: CallContext) -> Callable[..., Any]:
    """``await complete(provider, req)``: the non-streamed call with the shared context."""
    async def run(provider: Any, req: ChatRequest) -> list[Chunk]:
        return await provider.complete_chat(req, ctx)
    return run

