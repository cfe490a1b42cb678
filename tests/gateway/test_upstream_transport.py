"""The aiohttp-backed transport: bytes on the wire, pooling, and httpx's error classes.

Real loopback sockets only: each failure is produced by a tiny asyncio server doing exactly
that failure (refusing, hanging up mid-body, going silent).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from gateway.upstream_client import AiohttpTransport
from tests.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + (await reader.readexactly(length) if length else b"")


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/x"

    yield start
    for server in servers:
        server.close()


async def _send(url: str, *, read: float = 5.0) -> tuple[httpx.Response, bytes]:
    transport = AiohttpTransport(max_connections=4)
    try:
        request = httpx.Request("POST", url, headers=[("content-type", "application/json")],
                                content=b'{"a":1}',
                                extensions={"timeout": {"connect": 2.0, "read": read,
                                                        "write": 2.0, "pool": 2.0}})
        response = await transport.handle_async_request(request)
        try:
            body = b"".join([part async for part in response.stream])  # type: ignore[union-attr]
        finally:
            await response.aclose()
        return response, body
    finally:
        await transport.aclose()


async def test_request_bytes_and_response_arrive_intact(serve) -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await _read_request(reader))
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nx-up: 1\r\n"
                     b"content-length: 5\r\n\r\nhello")
        await writer.drain()
        writer.close()

    response, body = await _send(await serve(handler))
    assert (response.status_code, body, response.headers["x-up"]) == (201, b"hello", "1")
    head, _, payload = seen[0].partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/x HTTP/1.1\r\n") and payload == b'{"a":1}'
    assert b"content-length: 7" in head.lower() and b"user-agent" not in head.lower()


async def test_refused_connection_is_connect_error() -> None:
    with pytest.raises(httpx.ConnectError):
        await _send(f"http://127.0.0.1:{free_port()}/v1/x")


async def test_hang_up_mid_body_is_a_read_or_protocol_error(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        await _send(await serve(handler))


async def test_silence_is_a_read_timeout(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    with pytest.raises(httpx.ReadTimeout):
        await _send(await serve(handler), read=0.2)


async def test_closed_before_any_response_is_remote_protocol_error(serve) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.close()

    with pytest.raises(httpx.RemoteProtocolError):
        await _send(await serve(handler))
