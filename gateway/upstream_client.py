"""The one upstream HTTP client per process: httpx's API over aiohttp's connection pool.

httpcore's pool scans every pooled connection twice per request; under load it cost more
CPU than the rest of the gateway together (see bench/README.md). httpx-aiohttp keeps the
httpx API (so providers and respx-based tests are unchanged) on aiohttp's pool. Its error
mapping turns refused connections and dropped streams into ``ConnectTimeout``; the
subclass below maps them to what they are, so callers get 503 "unreachable", not 504.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

# Most specific first: the first match wins.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientOSError, httpx.NetworkError),
)


@contextlib.contextmanager
def _remapped() -> Iterator[None]:
    try:
        yield
    except httpx.TransportError as exc:
        cause = exc.__cause__
        for source, target in _ERRORS:
            if isinstance(cause, source):
                raise target(str(cause)) from cause
        raise


class _RemappedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _remapped():
            async for chunk in self._inner:
                yield chunk

    async def aclose(self) -> None:
        with _remapped():
            await self._inner.aclose()


class UpstreamTransport(AiohttpTransport):
    """AiohttpTransport with transport errors mapped to the right httpx classes."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        with _remapped():
            response = await super().handle_async_request(request)
        response.stream = _RemappedStream(response.stream)
        return response


def build_upstream_client(max_connections: int,
                          transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The shared client; ``transport`` replaces the aiohttp pool (tests, other seams)."""
    limits = httpx.Limits(max_connections=max_connections,
                          max_keepalive_connections=max_connections, keepalive_expiry=60)
    return httpx.AsyncClient(transport=transport or UpstreamTransport(limits=limits),
                             limits=limits, timeout=httpx.Timeout(60.0, connect=5.0))
