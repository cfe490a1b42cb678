"""The one upstream HTTP transport per process: httpx's transport API over aiohttp's pool.

Providers build ``httpx.Request`` objects and read ``httpx.Response`` streams; what moves
the bytes is an ``httpx.AsyncBaseTransport``, so respx and httpx's own transports plug in
unchanged (tests, ``bench --variant httpcore``). Under load httpcore's pool scanned every
pooled connection twice per request, and httpx's client layer (cookies, auth and redirect
flows, URL and header merging) cost more than aiohttp's whole request; see bench/README.md.

This transport is a thin adapter: aiohttp does the HTTP, and its exceptions are mapped to
the httpx classes they correspond to (refused connection → ``ConnectError``, dropped
stream → ``RemoteProtocolError``, ...), so providers handle one family of errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
import yarl

# Most specific first: the first match wins.
_ERRORS: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientProxyConnectionError, httpx.ProxyError),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.ReadError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.InvalidURL, httpx.UnsupportedProtocol),
    (aiohttp.ClientOSError, httpx.NetworkError),
    (aiohttp.ClientError, httpx.TransportError),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    try:
        yield
    except aiohttp.ClientError as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise  # pragma: no cover  (ClientError is the last row)


class _ResponseStream(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's byte stream; closing it frees the connection."""

    __slots__ = ("_response",)

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        # Back to the pool when the body was read to the end; closed otherwise.
        self._response.release()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``handle_async_request`` over one ``aiohttp.ClientSession`` (created lazily, in the
    running loop). Honours httpx's per-request ``timeout`` extension (connect, read, pool)."""

    def __init__(self, *, max_connections: int, keepalive_expiry: float = 60.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, yarl.URL] = {}

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0,
                                         keepalive_timeout=self._keepalive_expiry,
                                         ssl=httpx.create_ssl_context())
        # No env proxies, no cookies, no decompression: httpx decodes what it asked for.
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                              cookie_jar=aiohttp.DummyCookieJar(),
                                              skip_auto_headers=("User-Agent",))
        return self._session

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        t = request.extensions.get("timeout") or {}
        key = (t.get("connect"), t.get("read"), t.get("pool"))
        timeout = self._timeouts.get(key)
        if timeout is None:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=key[0], sock_read=key[1],
                                            connect=key[2])
            self._timeouts[key] = timeout
        return timeout

    def _url(self, request: httpx.Request) -> yarl.URL:
        raw = str(request.url)
        url = self._urls.get(raw)
        if url is None:
            url = yarl.URL(raw, encoded=True)
            if len(self._urls) < 1024:  # a handful of upstream endpoints in practice
                self._urls[raw] = url
        return url

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session or self._open()
        with _mapped():
            response = await session.request(
                request.method, self._url(request), headers=request.headers.multi_items(),
                data=request.content or None, allow_redirects=False, compress=False,
                timeout=self._timeout(request))
        return httpx.Response(response.status, headers=response.raw_headers,
                              stream=_ResponseStream(response), request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def build_upstream_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """The shared transport every provider sends through."""
    return AiohttpTransport(max_connections=max_connections)
