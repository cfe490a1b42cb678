"""Streams are read to their end, so the shared transport reuses one upstream connection.

This is the one provider test over a real socket: keep-alive only exists below httpx. It
runs on httpx's own transport and on the aiohttp one the gateway ships with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import httpx
import pytest

from gateway.upstream_client import AiohttpTransport
from providers.anthropic import AnthropicProvider
from providers.base import ChatRequest, ProviderConfig, Usage
from providers.openai import OpenAIProvider

REQ = ChatRequest(model="m", messages=[{"role": "user", "content": "hi"}])


class ChunkedSSEServer:
    """Serves recorded bodies with chunked encoding; the terminator comes a little late."""

    def __init__(self, bodies: dict[bytes, bytes]) -> None:
        self.bodies = bodies
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                path = head.split(b" ")[1]
                body = self.bodies[path]
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                for i in range(0, len(body), 700):
                    part = body[i:i + 700]
                    writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    await writer.drain()
                await asyncio.sleep(0.005)  # the end of the body trails the last event
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        writer.close()


@pytest.fixture
async def server(fixture_bytes: Callable[[str], bytes]
                 ) -> AsyncIterator[tuple[str, ChunkedSSEServer]]:
    sse = ChunkedSSEServer({b"/v1/chat/completions": fixture_bytes("openai_text.sse"),
                            b"/v1/messages": fixture_bytes("anthropic_text.sse")})
    listener = await asyncio.start_server(sse.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", sse
    listener.close()
    await listener.wait_closed()


@pytest.mark.parametrize("make_transport", [
    httpx.AsyncHTTPTransport,
    lambda: AiohttpTransport(max_connections=8),
], ids=["httpcore", "aiohttp"])
async def test_consecutive_calls_share_one_connection(server, collect, make_transport) -> None:
    base, sse = server
    async with make_transport() as client:
        openai = OpenAIProvider(ProviderConfig(name="o", kind="openai", base_url=f"{base}/v1"),
                                client)
        anthropic = AnthropicProvider(ProviderConfig(name="a", kind="anthropic", base_url=base),
                                      client)
        for provider in (openai, anthropic, openai, anthropic):
            chunks = await collect(provider, REQ)
            assert isinstance(chunks[-1], Usage)
    assert sse.connections == 1

